// quantbench: the workbench window. Wiring only.

#include "widgets/main_window.h"
#include "widgets/model_explorer.h"
#include "widgets/weights_panel.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QCoreApplication>
#include <QEventLoop>

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

struct GuiOptions {
    QCommandLineOption grab{QStringLiteral("grab"), QStringLiteral("Render the window into a PNG file and exit."),
                            QStringLiteral("png")};
    QCommandLineOption tensor{QStringLiteral("tensor"), QStringLiteral("Select this tensor after the model opens."),
                              QStringLiteral("name")};
};

void setIdentity()
{
    QCoreApplication::setApplicationName(QStringLiteral("quantbench"));
    QCoreApplication::setOrganizationName(QStringLiteral("Quantbench"));
    QCoreApplication::setApplicationVersion(QStringLiteral(QB_VERSION));
}

void configure(QCommandLineParser& parser, const GuiOptions& o)
{
    parser.setApplicationDescription(QStringLiteral("Post-training quantization workbench for LLaMA-family models."));
    parser.addHelpOption();
    parser.addVersionOption();
    parser.addOption(o.grab);
    parser.addOption(o.tensor);
    parser.addPositionalArgument(QStringLiteral("model"),
                                 QStringLiteral("Model to open (default: the bundled demo model)."));
}

// --help, --version and usage errors (exit 2) need no display: answer them from a QCoreApplication before
// the QApplication (which aborts when no display can be reached) exists. Returns false when the
// command line asks for the window.
bool answeredWithoutDisplay(int argc, char** argv)
{
    QStringList args;
    bool infoOnly = false;
    for (int i = 0; i < argc; ++i) {
        args << QString::fromLocal8Bit(argv[i]);
        const std::string_view a(argv[i]);
        if (i > 0 && (a == "-h" || a == "--help" || a == "-?" || a == "--help-all" || a == "-v" || a == "--version"))
            infoOnly = true;
    }
    GuiOptions o;
    QCommandLineParser parser;
    configure(parser, o);
    const bool parsed = parser.parse(args);
    if (parsed && !infoOnly) return false; // the window's QApplication takes over
    if (!parsed) {
        std::fprintf(stderr, "quantbench: %s (see --help)\n", qPrintable(parser.errorText()));
        std::exit(2);
    }
    QCoreApplication core(argc, argv);
    setIdentity();
    parser.process(core); // prints help or version and exits
    return true;
}

} // namespace

int main(int argc, char** argv)
{
    if (answeredWithoutDisplay(argc, argv)) return 0;
    QApplication app(argc, argv);
    setIdentity();

    GuiOptions o;
    QCommandLineParser parser;
    configure(parser, o);
    parser.process(app);
    const QCommandLineOption& grab = o.grab;
    const QCommandLineOption& tensor = o.tensor;

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
                QObject::connect(w.weightsPanel(), &qb::ui::WeightsPanel::statsReady, &statsLoop, &QEventLoop::quit);
                if (w.explorer()->selectTensor(parser.value(tensor))) statsLoop.exec();
            }
        }
        const QString out = parser.value(grab);
        QCoreApplication::processEvents(); // the layout requests the load posted (the status bar's label)
        const bool ok = w.grab().save(out);
        std::fprintf(ok ? stdout : stderr, "%s %s\n", ok ? "wrote" : "cannot write", qPrintable(out));
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
