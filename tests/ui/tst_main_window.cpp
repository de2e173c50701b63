// GUI smoke test: the main window opens offscreen, every menu opens on a real click, the About
// dialog appears and closes, and the panels exist.

#include "widgets/main_window.h"

#include <QDockWidget>
#include <QMenuBar>
#include <QMessageBox>
#include <QAbstractButton>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTabWidget>
#include <QTest>

using qb::ui::MainWindow;

class TestMainWindow : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { QStandardPaths::setTestModeEnabled(true); }

    void opensWithPanels()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(w.menuBar()->isVisible());
        QVERIFY(w.statusBar()->isVisible());
        QCOMPARE(w.viewTabs()->count(), 3);
        QVERIFY(w.explorerDock()->isVisible());
        QVERIFY(w.historyDock()->isVisible());
        QVERIFY(w.width() >= 1024);
    }

    void clickThroughMenus()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        const auto menuActions = w.menuBar()->actions();
        QVERIFY(menuActions.size() >= 3);
        for (QAction* a : menuActions) {
            QMenu* menu = a->menu();
            QVERIFY(menu);
            const QRect r = w.menuBar()->actionGeometry(a);
            QTest::mouseClick(w.menuBar(), Qt::LeftButton, {}, r.center());
            QTRY_VERIFY2(menu->isVisible(), qPrintable(a->text()));
            QVERIFY(!menu->actions().isEmpty());
            QTest::keyClick(menu, Qt::Key_Escape);
            QTRY_VERIFY(!menu->isVisible());
        }
    }

    void viewMenuTogglesDocks()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QAction* toggle = w.explorerDock()->toggleViewAction();
        toggle->trigger();
        QTRY_VERIFY(!w.explorerDock()->isVisible());
        toggle->trigger();
        QTRY_VERIFY(w.explorerDock()->isVisible());
    }

    void aboutDialogShowsVersions()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        w.aboutAction()->trigger();
        QMessageBox* box = nullptr;
        QTRY_VERIFY((box = w.findChild<QMessageBox*>(QStringLiteral("aboutBox"))) != nullptr);
        QTRY_VERIFY(box->isVisible());
        QVERIFY(box->text().contains(QStringLiteral(QB_VERSION)));
        QVERIFY(box->text().contains(QStringLiteral("Eigen")));
        QTest::mouseClick(box->button(QMessageBox::Ok), Qt::LeftButton);
        QTRY_VERIFY(w.findChild<QMessageBox*>(QStringLiteral("aboutBox")) == nullptr);
    }
};

QTEST_MAIN(TestMainWindow)
#include "tst_main_window.moc"
