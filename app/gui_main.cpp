// quantbench: the workbench window. Wiring only.

#include "widgets/main_window.h"
#include "widgets/model_explorer.h"
#include "widgets/weights_panel.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QEventLoop>

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
    QCommandLineOption tensor(QStringLiteral("tensor"),
                              QStringLiteral("Select this tensor after the model opens."),
                              QStringLiteral("name"));
    parser.addOption(tensor);
    parser.addPositionalArgument(QStringLiteral("model"),
                                 QStringLiteral("Model to open (default: the bundled demo model)."));
    parser.process(app);

    qb::ui::MainWindow w;
    w.show();
    // The model named on the command line; otherwise the bundled demo model.
    QString model = parser.positionalArguments().value(0);
    if (model.isEmpty()) model = qb::ui::MainWindow::bundledDemoPath();
    if (parser.isSet(grab)) {
        if (!model.isEmpty()) {
            QEventLoop loop; // wait for the worker thread to deliver the model
            QObject::connect(&w, &qb::ui::MainWindow::modelLoaded, &loop, &QEventLoop::quit);
            QObject::connect(&w, &qb::ui::MainWindow::modelLoadFailed, &loop, &QEventLoop::quit);
            w.openModel(model);
            loop.exec();
            if (parser.isSet(tensor)) {
                QEventLoop statsLoop;
                QObject::connect(w.weightsPanel(), &qb::ui::WeightsPanel::statsReady, &statsLoop,
                                 &QEventLoop::quit);
                if (w.explorer()->selectTensor(parser.value(tensor))) statsLoop.exec();
            }
        }
        const QString out = parser.value(grab);
        const bool ok = w.grab().save(out);
        std::fprintf(ok ? stdout : stderr, "%s %s\n", ok ? "wrote" : "cannot write",
                     qPrintable(out));
        return ok ? 0 : 1;
    }
    if (!model.isEmpty()) {
        if (parser.isSet(tensor)) {
            const QString name = parser.value(tensor);
            QObject::connect(&w, &qb::ui::MainWindow::modelLoaded, &w,
                             [&w, name] { w.explorer()->selectTensor(name); });
        }
        w.openModel(model);
    }
    return app.exec();
}
