#pragma once
// MainWindow: composes the workbench's panels, menus and status bar. Composition only: panels
// do their own work and every numeric job runs through ui/tasks, never on the GUI thread.

#include <QMainWindow>

class QAction;
class QDockWidget;
class QLabel;
class QMenu;
class QTabWidget;

namespace qb::ui {

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget* parent = nullptr);

    QTabWidget* viewTabs() const { return m_tabs; }
    QDockWidget* explorerDock() const { return m_explorerDock; }
    QDockWidget* historyDock() const { return m_historyDock; }
    QAction* openAction() const { return m_openAction; }
    QAction* aboutAction() const { return m_aboutAction; }

    // The versions shown in Help > About (also used by --version).
    static QString versionText();

public Q_SLOTS:
    void showAbout();

private:
    void createPanels();
    void createMenus();
    QWidget* placeholder(const QString& text);

    QTabWidget* m_tabs = nullptr;
    QDockWidget* m_explorerDock = nullptr;
    QDockWidget* m_historyDock = nullptr;
    QLabel* m_statusModel = nullptr;
    QAction* m_openAction = nullptr;
    QAction* m_aboutAction = nullptr;
};

} // namespace qb::ui
