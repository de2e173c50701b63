#include "widgets/main_window.h"

#include <Eigen/Core>
#include <QApplication>
#include <QDockWidget>
#include <QIcon>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QStatusBar>
#include <QTabWidget>

namespace qb::ui {

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent)
{
    setWindowTitle(QStringLiteral("Quantbench"));
    setObjectName(QStringLiteral("MainWindow"));
    setWindowIcon(QIcon(QStringLiteral(":/quantbench/icon.png")));
    resize(1280, 800);
    createPanels();
    createMenus();
    m_statusModel = new QLabel(tr("No model loaded"), this);
    m_statusModel->setObjectName(QStringLiteral("statusModel"));
    statusBar()->addPermanentWidget(m_statusModel);
    statusBar()->showMessage(tr("Ready"));
}

QString MainWindow::versionText()
{
    return QStringLiteral("Quantbench %1\nQt %2 (built with %3)\nEigen %4.%5.%6")
        .arg(QStringLiteral(QB_VERSION), QString::fromLatin1(qVersion()),
             QStringLiteral(QT_VERSION_STR))
        .arg(EIGEN_WORLD_VERSION)
        .arg(EIGEN_MAJOR_VERSION)
        .arg(EIGEN_MINOR_VERSION);
}

QWidget* MainWindow::placeholder(const QString& text)
{
    auto* label = new QLabel(text);
    label->setAlignment(Qt::AlignCenter);
    label->setWordWrap(true);
    label->setEnabled(false);
    return label;
}

void MainWindow::createPanels()
{
    m_tabs = new QTabWidget(this);
    m_tabs->setObjectName(QStringLiteral("viewTabs"));
    m_tabs->addTab(placeholder(tr("Select a tensor to see its weight distribution.")),
                   tr("Weights"));
    m_tabs->addTab(placeholder(tr("Run calibration to see activation statistics.")),
                   tr("Activations"));
    m_tabs->addTab(placeholder(tr("Per-layer plan, quantization runs and errors appear here.")),
                   tr("Quantization"));
    setCentralWidget(m_tabs);

    m_explorerDock = new QDockWidget(tr("Model explorer"), this);
    m_explorerDock->setObjectName(QStringLiteral("explorerDock"));
    m_explorerDock->setWidget(placeholder(tr("Open a model (File > Open) to explore its layers.")));
    addDockWidget(Qt::LeftDockWidgetArea, m_explorerDock);

    m_historyDock = new QDockWidget(tr("Run history"), this);
    m_historyDock->setObjectName(QStringLiteral("historyDock"));
    m_historyDock->setWidget(placeholder(tr("Perplexity and quantization runs are listed here.")));
    addDockWidget(Qt::BottomDockWidgetArea, m_historyDock);
    resizeDocks({m_explorerDock}, {360}, Qt::Horizontal);
    resizeDocks({m_historyDock}, {180}, Qt::Vertical);
}

void MainWindow::createMenus()
{
    QMenu* file = menuBar()->addMenu(tr("&File"));
    file->setObjectName(QStringLiteral("menuFile"));
    m_openAction = file->addAction(tr("&Open Model..."));
    m_openAction->setShortcut(QKeySequence::Open);
    m_openAction->setObjectName(QStringLiteral("actionOpen"));
    m_openAction->setEnabled(false); // enabled by the model-loading panel
    file->addSeparator();
    QAction* quit = file->addAction(tr("&Quit"));
    quit->setShortcut(QKeySequence::Quit);
    quit->setObjectName(QStringLiteral("actionQuit"));
    connect(quit, &QAction::triggered, this, &QWidget::close);

    QMenu* view = menuBar()->addMenu(tr("&View"));
    view->setObjectName(QStringLiteral("menuView"));
    view->addAction(m_explorerDock->toggleViewAction());
    view->addAction(m_historyDock->toggleViewAction());

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    help->setObjectName(QStringLiteral("menuHelp"));
    m_aboutAction = help->addAction(tr("&About Quantbench"));
    m_aboutAction->setObjectName(QStringLiteral("actionAbout"));
    connect(m_aboutAction, &QAction::triggered, this, &MainWindow::showAbout);
}

void MainWindow::showAbout()
{
    auto* box = new QMessageBox(QMessageBox::Information, tr("About Quantbench"),
                                tr("Post-training quantization workbench for LLaMA-family "
                                   "models.\n\n") +
                                    versionText(),
                                QMessageBox::Ok, this);
    box->setObjectName(QStringLiteral("aboutBox"));
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->open(); // window-modal, never blocks the event loop
}

} // namespace qb::ui
