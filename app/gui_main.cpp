// quantbench: the workbench window. Wiring only.

#include "widgets/main_window.h"

#include <QApplication>
#include <QCommandLineParser>

#include <cstdio>

int main(int argc, char** argv)
{
    QApplication app(argc, argv);
    QApplication::setApplicationName(QStringLiteral("quantbench"));
    QApplication::setOrganizationName(QStringLiteral("Quantbench"));
    QApplication::setApplicationVersion(QStringLiteral(QB_VERSION));

    QCommandLineParser parser;
    parser.setApplicationDescription(
        QStringLiteral("Post-training quantization workbench for LLaMA-family models."));
    parser.addHelpOption();
    parser.addVersionOption();
    QCommandLineOption grab(QStringLiteral("grab"),
                            QStringLiteral("Render the window into a PNG file and exit."),
                            QStringLiteral("png"));
    parser.addOption(grab);
    parser.addPositionalArgument(QStringLiteral("model"),
                                 QStringLiteral("Model to open (default: the bundled demo model)."));
    parser.process(app);

    qb::ui::MainWindow w;
    w.show();
    if (parser.isSet(grab)) {
        const QString out = parser.value(grab);
        const bool ok = w.grab().save(out);
        std::fprintf(ok ? stdout : stderr, "%s %s\n", ok ? "wrote" : "cannot write",
                     qPrintable(out));
        return ok ? 0 : 1;
    }
    return app.exec();
}
