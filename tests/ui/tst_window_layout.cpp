// The window as a daily tool (issue 19 items 1 and 11), offscreen with the demo model loaded:
//
// - Nothing is cut at 1280x800 and 1366x768: with every tab and sub-tab shown in turn, every
//   visible label, button, tab, header section and chart text is checked against its geometry
//   (see TextFitChecker for what exactly is measured).
// - The layout is remembered: window geometry, dock layout and every splitter come back after a
//   close (settings isolated by QStandardPaths::setTestModeEnabled, keys removed after each test).
// - Keyboard and accessibility: every menu action has a shortcut or a mnemonic (unique in its
//   menu), the workflow actions have shortcuts, Ctrl+1..N switches tabs, chart views and
//   icon-only buttons have accessible names, and Tab reaches every control of every tab.
// - A screenshot of each main tab at 1280x800 (packaging/screenshots.sh sets QB_SCREENSHOT_DIR).
//
// The test runs on an offscreen screen of 1920x1200 (the default offscreen screen is 800x600,
// and restoreGeometry() would shrink a saved 1366x768 window to fit it).

#include "models/run_history_model.h"
#include "widgets/job_status.h"
#include "widgets/main_window.h"
#include "widgets/model_explorer.h"
#include "widgets/activations_panel.h"
#include "widgets/perplexity_panel.h"
#include "widgets/plan_editor.h"
#include "widgets/transform_lab.h"
#include "widgets/quantize_panel.h"
#include "widgets/tensor_error_view.h"
#include "widgets/weights_panel.h"

#include <QAbstractButton>
#include <QAbstractItemView>
#include <QAbstractSpinBox>
#include <QApplication>
#include <QBarCategoryAxis>
#include <QChart>
#include <QChartView>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QDockWidget>
#include <QFile>
#include <QGraphicsScene>
#include <QGraphicsSimpleTextItem>
#include <QGraphicsTextItem>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMenu>
#include <QMenuBar>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QRadioButton>
#include <QScreen>
#include <QSet>
#include <QSettings>
#include <QSignalSpy>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QStatusBar>
#include <QStyle>
#include <QStyleOptionButton>
#include <QTabBar>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTest>
#include <QTextDocument>
#include <QToolButton>
#include <QValueAxis>

#include <functional>

using namespace qb::ui;

namespace {

const QString kTensor = QStringLiteral("model.layers.1.mlp.down_proj.weight");

// Where a widget sits, for messages: "Quantization > Plan > planLoad (QPushButton)".
QString describe(const QWidget* w, const QString& where)
{
    QString name = w->objectName();
    if (name.isEmpty() && w->parentWidget()) name = QStringLiteral("child of ") + w->parentWidget()->objectName();
    return QStringLiteral("%1: %2 (%3)").arg(where, name, QString::fromLatin1(w->metaObject()->className()));
}

// Text as shown: the '&' of a mnemonic is not drawn, "&&" is one '&'.
QString shownText(QString text)
{
    text.replace(QStringLiteral("&&"), QStringLiteral("\x01"));
    text.remove(QLatin1Char('&'));
    text.replace(QLatin1Char('\x01'), QLatin1Char('&'));
    return text;
}

int textWidth(const QFontMetrics& fm, const QString& text)
{
    int w = 0;
    for (const QString& line : text.split(QLatin1Char('\n')))
        w = std::max(w, fm.horizontalAdvance(line));
    return w;
}

QString plainText(const QString& maybeHtml)
{
    if (!Qt::mightBeRichText(maybeHtml)) return maybeHtml;
    QTextDocument doc;
    doc.setHtml(maybeHtml);
    return doc.toPlainText();
}

// The protected QHeaderView::sectionSizeFromContents (the size the header asks for a section's
// text, icon and sort arrow), reached through a member pointer of a derived class.
struct HeaderAccess : QHeaderView {
    using QHeaderView::sectionSizeFromContents;
};

bool isVisibleOnScreen(const QWidget* w) { return w->isVisible() && w->width() > 0 && w->height() > 0; }

// Collects every piece of text that does not fit where it is drawn, in the window as it is shown:
// - QLabel: a label without word wrap needs its sizeHint (the full text with margins and indent);
//   a word-wrapped one needs heightForWidth(width) and its longest word (minimumSizeHint); a label
//   showing an ellipsis '…' was elided by our code.
// - Buttons: the text (and icon) must fit the style's contents rectangle (push buttons, check
//   boxes, radio buttons); tool buttons need their sizeHint width.
// - QTabBar: every tab lies inside the bar (no scroll arrows) and is as wide as its text needs.
// - QHeaderView: every shown section is as wide as sectionSizeFromContents (less the sort arrow
//   where the section is not the sorted one) and a horizontal header's sections all lie inside
//   the view (no column cut at the right edge, no horizontal scrolling needed to see a column).
// - Charts: Qt Charts elides its title, axis titles, axis labels and legend entries with "..."
//   when they do not fit (ChartPresenter::truncatedText); any visible scene text ending in "..."
//   is reported. Visible scene texts must not overlap one another (labels closer than their
//   width on a crowded axis, a title over the plot) and must lie inside the view. Explicitly,
//   the chart title must fit the chart's width and each axis title the plot area's side
//   (width for horizontal axes, height for vertical ones).
// Not checked: text a widget paints itself (item view cells, line edit and combo box contents),
// and axis labels Qt Charts hides outright instead of truncating.
class TextFitChecker {
public:
    QStringList problems;

    void check(QWidget* root, const QString& where)
    {
        for (QWidget* w : root->findChildren<QWidget*>()) {
            if (!isVisibleOnScreen(w)) continue;
            if (auto* l = qobject_cast<QLabel*>(w)) checkLabel(l, where);
            else if (auto* b = qobject_cast<QAbstractButton*>(w)) checkButton(b, where);
            else if (auto* t = qobject_cast<QTabBar*>(w)) checkTabBar(t, where);
            else if (auto* h = qobject_cast<QHeaderView*>(w)) checkHeader(h, where);
            else if (auto* c = qobject_cast<QChartView*>(w)) checkChart(c, where);
        }
    }

private:
    void add(const QWidget* w, const QString& where, const QString& what) { problems << describe(w, where) + what; }

    void checkLabel(QLabel* l, const QString& where)
    {
        if (l->text().isEmpty() || !l->pixmap().isNull()) return;
        const QString text = plainText(l->text());
        if (text.contains(QChar(0x2026))) add(l, where, QStringLiteral(" shows an elided text \"%1\"").arg(text));
        if (!l->wordWrap()) {
            const QSize need = l->sizeHint();
            if (need.width() > l->width() || need.height() > l->height())
                add(l, where,
                    QStringLiteral(" \"%1\" needs %2x%3, has %4x%5")
                        .arg(text.left(80))
                        .arg(need.width())
                        .arg(need.height())
                        .arg(l->width())
                        .arg(l->height()));
            return;
        }
        const int needH = l->heightForWidth(l->width());
        const int needW = l->minimumSizeHint().width();
        if (needH > l->height() || needW > l->width())
            add(l, where,
                QStringLiteral(" wrapped \"%1\" needs %2 px high (longest word %3 px) at width %4, has %5x%6")
                    .arg(text.left(80))
                    .arg(needH)
                    .arg(needW)
                    .arg(l->width())
                    .arg(l->width())
                    .arg(l->height()));
    }

    void checkButton(QAbstractButton* b, const QString& where)
    {
        const QString text = shownText(b->text());
        if (text.isEmpty()) return;
        if (auto* tb = qobject_cast<QToolButton*>(b)) {
            if (tb->toolButtonStyle() == Qt::ToolButtonIconOnly && !tb->icon().isNull()) return;
            if (tb->sizeHint().width() > tb->width())
                add(b, where,
                    QStringLiteral(" \"%1\" needs %2 px, has %3")
                        .arg(text)
                        .arg(tb->sizeHint().width())
                        .arg(tb->width()));
            return;
        }
        QStyleOptionButton opt;
        opt.initFrom(b);
        opt.text = b->text();
        QStyle::SubElement contents = QStyle::SE_PushButtonContents;
        if (qobject_cast<QCheckBox*>(b)) contents = QStyle::SE_CheckBoxContents;
        else if (qobject_cast<QRadioButton*>(b)) contents = QStyle::SE_RadioButtonContents;
        else if (!qobject_cast<QPushButton*>(b)) return; // Qt's private buttons draw no text
        const QRect r = b->style()->subElementRect(contents, &opt, b);
        int need = textWidth(b->fontMetrics(), text);
        if (!b->icon().isNull()) need += b->iconSize().width() + 4;
        if (need > r.width())
            add(b, where, QStringLiteral(" \"%1\" needs %2 px, has %3").arg(text).arg(need).arg(r.width()));
    }

    void checkTabBar(QTabBar* t, const QString& where)
    {
        const int hspace = t->style()->pixelMetric(QStyle::PM_TabBarTabHSpace, nullptr, t);
        for (int i = 0; i < t->count(); ++i) {
            if (!t->isTabVisible(i)) continue;
            const QRect r = t->tabRect(i);
            const QString text = shownText(t->tabText(i));
            if (!t->rect().contains(r))
                add(t, where, QStringLiteral(" tab \"%1\" lies outside the bar (scroll arrows)").arg(text));
            const int need = textWidth(t->fontMetrics(), text) + hspace;
            if (need > r.width())
                add(t, where, QStringLiteral(" tab \"%1\" needs %2 px, has %3").arg(text).arg(need).arg(r.width()));
        }
    }

    void checkHeader(QHeaderView* h, const QString& where)
    {
        if (!h->model()) return;
        const bool horizontal = h->orientation() == Qt::Horizontal;
        const int margin = h->style()->pixelMetric(QStyle::PM_HeaderMargin, nullptr, h);
        for (int i = 0; i < h->count(); ++i) {
            if (h->isSectionHidden(i)) continue;
            const QString text = h->model()->headerData(i, h->orientation(), Qt::DisplayRole).toString();
            QSize need = (h->*(&HeaderAccess::sectionSizeFromContents))(i);
            if (h->isSortIndicatorShown() && h->sortIndicatorSection() != i) { // no arrow drawn here
                if (horizontal) need.rwidth() -= need.height() + margin;
                else need.rheight() -= need.width() + margin;
            }
            const int has = h->sectionSize(i);
            if (!text.isEmpty() && horizontal && need.width() > has)
                add(h, where,
                    QStringLiteral(" column \"%1\" needs %2 px, has %3").arg(text).arg(need.width()).arg(has));
            if (!text.isEmpty() && !horizontal && need.width() > h->width())
                add(h, where,
                    QStringLiteral(" row header \"%1\" needs %2 px, has %3")
                        .arg(text)
                        .arg(need.width())
                        .arg(h->width()));
            if (horizontal) {
                const int left = h->sectionViewportPosition(i);
                if (left < 0 || left + has > h->width() + 1)
                    add(h, where,
                        QStringLiteral(" column \"%1\" at %2..%3 is cut by the view (%4 px wide)")
                            .arg(text)
                            .arg(left)
                            .arg(left + has)
                            .arg(h->width()));
            }
        }
    }

    void checkChart(QChartView* v, const QString& where)
    {
        QChart* c = v->chart();
        if (!c) return;
        const QRectF plot = c->plotArea();
        const QString title = plainText(c->title());
        if (!title.isEmpty()) {
            const int need = textWidth(QFontMetrics(c->titleFont()), title);
            if (need > c->size().width())
                add(v, where,
                    QStringLiteral(" chart title \"%1\" needs %2 px, chart is %3")
                        .arg(title)
                        .arg(need)
                        .arg(c->size().width()));
        }
        for (QAbstractAxis* a : c->axes()) {
            if (!a->isVisible() || !a->isTitleVisible() || a->titleText().isEmpty()) continue;
            const QString t = plainText(a->titleText());
            const int need = QFontMetrics(a->titleFont()).horizontalAdvance(t);
            const qreal room = a->orientation() == Qt::Horizontal ? plot.width() : plot.height();
            if (need > room)
                add(v, where,
                    QStringLiteral(" axis title \"%1\" needs %2 px, plot side is %3").arg(t).arg(need).arg(room));
        }
        struct Text {
            QString text;
            QRectF rect;
        };
        std::vector<Text> texts;
        const QRectF viewRect = v->mapToScene(v->viewport()->rect()).boundingRect();
        for (QGraphicsItem* item : v->scene()->items()) {
            if (!item->isVisible()) continue;
            QString text;
            QRectF rect;
            if (auto* t = qgraphicsitem_cast<QGraphicsTextItem*>(item)) {
                text = t->toPlainText();
                const qreal m = t->document()->documentMargin();
                rect = t->sceneBoundingRect().adjusted(m, m, -m, -m);
            } else if (auto* s = qgraphicsitem_cast<QGraphicsSimpleTextItem*>(item)) {
                text = s->text();
                rect = s->sceneBoundingRect();
            } else {
                continue;
            }
            if (text.trimmed().isEmpty()) continue;
            if (text.endsWith(QStringLiteral("...")))
                add(v, where, QStringLiteral(" chart text elided to \"%1\"").arg(text));
            if (!viewRect.adjusted(-1, -1, 1, 1).contains(rect))
                add(v, where, QStringLiteral(" chart text \"%1\" is cut by the view").arg(text));
            texts.push_back({text, rect});
        }
        for (std::size_t i = 0; i < texts.size(); ++i)
            for (std::size_t j = i + 1; j < texts.size(); ++j) {
                // Line boxes include the ascent and descent room above and below the glyphs: boxes
                // that share less than a third of their height (a y label above an x label at
                // the plot's corner) do not overlap in ink.
                const QRectF overlap = texts[i].rect.intersected(texts[j].rect);
                const qreal lower = std::min(texts[i].rect.height(), texts[j].rect.height());
                if (overlap.width() > 1 && overlap.height() > lower / 3)
                    add(v, where,
                        QStringLiteral(" chart texts \"%1\" and \"%2\" overlap (%3,%4 %5x%6 and %7,%8 %9x%10)")
                            .arg(texts[i].text, texts[j].text)
                            .arg(texts[i].rect.x())
                            .arg(texts[i].rect.y())
                            .arg(texts[i].rect.width())
                            .arg(texts[i].rect.height())
                            .arg(texts[j].rect.x())
                            .arg(texts[j].rect.y())
                            .arg(texts[j].rect.width())
                            .arg(texts[j].rect.height()));
            }
    }
};

// QVERIFY2 cuts long messages: every problem goes to the log, the failure gives the count.
bool reportAll(const QStringList& problems)
{
    for (const QString& p : problems)
        qWarning("%s", qPrintable(p));
    return problems.isEmpty();
}

// Lays out what was just shown (posted layout requests, chart geometry). Ends with the layout
// requests that the last round of events posted: a background result delivered there (the Distill
// panel's estimate) changes a label's text, and its new size must be laid out before anything is
// measured, as the window does before it paints.
void settle()
{
    for (int i = 0; i < 3; ++i) {
        QCoreApplication::sendPostedEvents(nullptr, QEvent::LayoutRequest);
        QCoreApplication::sendPostedEvents();
        QCoreApplication::processEvents();
    }
    for (int i = 0; i < 2; ++i) // a layout's request may post its parent's
        QCoreApplication::sendPostedEvents(nullptr, QEvent::LayoutRequest);
}

// Shows every page of `tabs` in turn (and the pages of tab widgets nested in it) and calls
// `visit` with "Tab > Sub-tab" for each.
void forEachPage(QTabWidget* tabs, const QString& prefix, const std::function<void(const QString&)>& visit)
{
    for (int i = 0; i < tabs->count(); ++i) {
        if (!tabs->isTabEnabled(i)) continue;
        tabs->setCurrentIndex(i);
        settle();
        const QString where = prefix + shownText(tabs->tabText(i));
        visit(where);
        for (QTabWidget* nested : tabs->widget(i)->findChildren<QTabWidget*>())
            if (nested->isVisible()) forEachPage(nested, where + QStringLiteral(" > "), visit);
    }
}

void clearLayoutSettings() { QSettings().remove(QStringLiteral("window")); }

void saveScreenshot(QWidget& w, const QString& name)
{
    QString dir = qEnvironmentVariable("QB_SCREENSHOT_DIR");
    if (dir.isEmpty()) dir = QStringLiteral(QB_BINARY_DIR "/screenshots");
    QDir().mkpath(dir);
    settle();
    QVERIFY(w.grab().save(dir + QLatin1Char('/') + name));
}

// Opens the demo model in a window of `size` and shows one tensor's statistics.
bool openWithTensor(MainWindow& w, QSize size)
{
    w.resize(size);
    w.show();
    if (!QTest::qWaitForWindowExposed(&w)) return false;
    w.activateWindow();
    if (!QTest::qWaitForWindowActive(&w)) return false;
    QSignalSpy loaded(&w, &MainWindow::modelLoaded);
    w.openModel(QStringLiteral(QB_DEMO_DIR));
    if (!loaded.wait(20000)) return false;
    QSignalSpy ready(w.weightsPanel(), &WeightsPanel::statsReady);
    if (!w.explorer()->selectTensor(kTensor)) return false;
    if (!ready.wait(20000)) return false;
    settle();
    return w.size() == size;
}

// Fills the views with data through the keyboard shortcuts: a small calibration (Ctrl+K), a
// transform lab run, and a quantization run (Ctrl+R) that also lands in the run history.
void fillViews(MainWindow& w)
{
    ActivationsPanel* act = w.activationsPanel();
    act->windowsSpin()->setValue(16);
    act->lengthSpin()->setValue(64);
    QSignalSpy calibrated(act, &ActivationsPanel::calibrationFinished);
    QTest::keyClick(&w, Qt::Key_K, Qt::ControlModifier);
    QVERIFY(calibrated.wait(120000));
    QVERIFY2(calibrated.last().at(0).toBool(), qPrintable(calibrated.last().at(1).toString()));
    QTRY_VERIFY(!w.jobStatus()->isBusy());
    QVERIFY(w.explorer()->selectTensor(kTensor)); // the activations of the selected input
    QSignalSpy lab(w.transformLab(), &TransformLab::labFinished);
    w.transformLab()->startLab();
    QVERIFY(lab.wait(120000));
    QVERIFY2(lab.last().at(0).toBool(), qPrintable(lab.last().at(1).toString()));
    QTRY_VERIFY(!w.jobStatus()->isBusy());
    QuantizePanel* q = w.quantizePanel();
    QSignalSpy done(q, &QuantizePanel::quantizeFinished);
    QSignalSpy whatIf(q->tensorView(), &TensorErrorView::previewFinished);
    QTest::keyClick(&w, Qt::Key_R, Qt::ControlModifier);
    QVERIFY(done.wait(120000));
    QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
    // The selected tensor's error analysis and what-if preview follow the run on their own.
    QTRY_VERIFY_WITH_TIMEOUT(whatIf.count() > 0, 120000);
    QVERIFY(whatIf.last().at(0).toBool());
    QTRY_VERIFY(!w.jobStatus()->isBusy());
    QCOMPARE(w.perplexityPanel()->history()->rowCount(), 1);
    w.viewTabs()->setCurrentIndex(0);
}

// Every action of a menu and its submenus (separators and the file list of Open Recent left out).
void collectActions(QMenu* menu, QList<QAction*>* out)
{
    for (QAction* a : menu->actions()) {
        if (a->isSeparator()) continue;
        out->append(a);
        if (a->menu() && a->menu()->objectName() != QStringLiteral("menuRecent")) collectActions(a->menu(), out);
    }
}

// A control that Tab should reach: visible, enabled, takes focus from the keyboard.
bool isTabStop(const QWidget* w)
{
    return isVisibleOnScreen(w) && w->isEnabled() && (w->focusPolicy() & Qt::TabFocus) && !w->focusProxy() &&
           !qobject_cast<const QTabBar*>(w);
}

} // namespace

class TestWindowLayout : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase()
    {
        QStandardPaths::setTestModeEnabled(true);
        clearLayoutSettings();
        QCOMPARE(QGuiApplication::primaryScreen()->geometry().size(), QSize(1920, 1200));
    }
    void cleanup() { clearLayoutSettings(); }

    void noTextIsCut_data()
    {
        QTest::addColumn<QSize>("size");
        QTest::newRow("1280x800") << QSize(1280, 800);
        QTest::newRow("1366x768") << QSize(1366, 768);
    }
    void noTextIsCut()
    {
        QFETCH(QSize, size);
        MainWindow w;
        QVERIFY(openWithTensor(w, size));
        fillViews(w);
        if (QTest::currentTestFailed()) return;
        TextFitChecker checker;
        int pages = 0;
        forEachPage(w.viewTabs(), QString(), [&](const QString& where) {
            ++pages;
            checker.check(&w, where);
        });
        QVERIFY(pages >= 4 + 6); // four tabs, the Quantization tab's six views
        checker.problems.removeDuplicates();
        QVERIFY2(reportAll(checker.problems), qPrintable(QStringLiteral("%1 cut texts").arg(checker.problems.size())));
        // The main area keeps most of the height: the run history dock is a strip.
        QVERIFY2(w.historyDock()->height() <= size.height() / 5,
                 qPrintable(QStringLiteral("history dock %1 px high").arg(w.historyDock()->height())));
        QVERIFY2(w.viewTabs()->height() >= size.height() / 2,
                 qPrintable(QStringLiteral("tabs %1 px high").arg(w.viewTabs()->height())));
    }

    // A long message (a filter that matches nothing, a plan JSON error with a long unbroken
    // path) wraps or is cut off inside its own label: the docks and the window keep their width.
    void longMessagesDoNotSqueezeTheExplorer()
    {
        MainWindow w;
        QVERIFY(openWithTensor(w, QSize(1280, 800)));
        const int dock = w.explorerDock()->width();
        const QString longWord =
            QStringLiteral("layers.*.self_attn.") + QStringLiteral("no_such_projection_weight.").repeated(6);
        w.explorer()->filterEdit()->setText(longWord);
        settle();
        QVERIFY(w.explorer()->noMatchLabel()->isVisible());
        w.viewTabs()->setCurrentWidget(w.quantizePanel());
        PlanEditor* plan = w.quantizePanel()->planEditor();
        plan->jsonEdit()->setPlainText(QStringLiteral("{\"version\": 1, \"rules\": [{\"match\": \"") + longWord +
                                       QStringLiteral("\", \"bits\": \"not a number, ") +
                                       QStringLiteral("and a long explanation that has to wrap ").repeated(4) +
                                       QStringLiteral("\"}]}"));
        auto* apply = plan->findChild<QPushButton*>(QStringLiteral("planJsonApply"));
        QVERIFY(apply);
        QTest::mouseClick(apply, Qt::LeftButton);
        settle();
        QVERIFY(!plan->messageLabel()->text().isEmpty());
        QCOMPARE(w.size(), QSize(1280, 800));
        QVERIFY2(std::abs(w.explorerDock()->width() - dock) <= 2,
                 qPrintable(QStringLiteral("%1 -> %2").arg(dock).arg(w.explorerDock()->width())));
        TextFitChecker checker;
        checker.check(&w, QStringLiteral("long messages"));
        checker.problems.removeDuplicates();
        QVERIFY2(reportAll(checker.problems), qPrintable(QStringLiteral("%1 cut texts").arg(checker.problems.size())));
    }

    // The checker itself: a label, a button and a header section made too small are reported.
    void checkerFindsCutText()
    {
        QWidget box;
        box.resize(400, 200);
        auto* label = new QLabel(QStringLiteral("A label far too long for its forty pixels"), &box);
        label->setGeometry(0, 0, 40, 20);
        auto* button = new QPushButton(QStringLiteral("A button with a long text"), &box);
        button->setGeometry(0, 30, 50, 24);
        box.show();
        QVERIFY(QTest::qWaitForWindowExposed(&box));
        TextFitChecker checker;
        checker.check(&box, QStringLiteral("box"));
        QCOMPARE(checker.problems.size(), 2);
        label->setGeometry(0, 0, 390, 20);
        button->setGeometry(0, 30, 390, 24);
        TextFitChecker fits;
        fits.check(&box, QStringLiteral("box"));
        QVERIFY2(fits.problems.isEmpty(), qPrintable(fits.problems.join(QLatin1Char('\n'))));
    }

    void splittersHaveUniqueNames()
    {
        MainWindow w;
        QSet<QString> names;
        for (QSplitter* s : w.findChildren<QSplitter*>()) {
            QVERIFY2(!s->objectName().isEmpty(), "a splitter without objectName is not remembered");
            QVERIFY2(!names.contains(s->objectName()), qPrintable(s->objectName()));
            names.insert(s->objectName());
        }
        QVERIFY(names.size() >= 7);
        for (QDockWidget* d : w.findChildren<QDockWidget*>())
            QVERIFY(!d->objectName().isEmpty()); // saveState() needs them
    }

    void layoutIsRemembered()
    {
        QList<int> weightsSizes, planSizes;
        {
            MainWindow w;
            w.show();
            QVERIFY(QTest::qWaitForWindowExposed(&w));
            w.resize(1366, 768);
            w.addDockWidget(Qt::RightDockWidgetArea, w.explorerDock());
            w.historyDock()->hide();
            w.resizeDocks({w.explorerDock()}, {300}, Qt::Horizontal);
            auto* weights = w.findChild<QSplitter*>(QStringLiteral("weightsSplit"));
            auto* plan = w.findChild<QSplitter*>(QStringLiteral("planSplit"));
            QVERIFY(weights && plan);
            weights->setSizes({150, 350});
            plan->setSizes({300, 500});
            settle();
            weightsSizes = weights->sizes();
            planSizes = plan->sizes();
            QVERIFY(w.close());
        }
        QVERIFY(QSettings().contains(QStringLiteral("window/geometry")));
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        settle();
        QCOMPARE(w.size(), QSize(1366, 768));
        QCOMPARE(w.dockWidgetArea(w.explorerDock()), Qt::RightDockWidgetArea);
        QVERIFY(!w.historyDock()->isVisible());
        QVERIFY2(std::abs(w.explorerDock()->width() - 300) <= 4,
                 qPrintable(QString::number(w.explorerDock()->width())));
        QCOMPARE(w.findChild<QSplitter*>(QStringLiteral("weightsSplit"))->sizes(), weightsSizes);
        QCOMPARE(w.findChild<QSplitter*>(QStringLiteral("planSplit"))->sizes(), planSizes);

        // Without saved settings the window starts at the default 1280x800.
        clearLayoutSettings();
        MainWindow fresh;
        QCOMPARE(fresh.size(), QSize(1280, 800));
        QCOMPARE(fresh.dockWidgetArea(fresh.explorerDock()), Qt::LeftDockWidgetArea);
        QVERIFY(!fresh.historyDock()->isHidden());
    }

    void menuActionsHaveShortcutsOrMnemonics()
    {
        MainWindow w;
        QList<QAction*> actions;
        for (QAction* top : w.menuBar()->actions()) {
            QVERIFY2(!QKeySequence::mnemonic(top->text()).isEmpty(), qPrintable(top->text()));
            QVERIFY(top->menu());
            collectActions(top->menu(), &actions);
        }
        QVERIFY(actions.size() >= 15);
        QHash<QKeySequence, QString> shortcuts;
        for (QAction* a : actions) {
            const bool mnemonic = !QKeySequence::mnemonic(a->text()).isEmpty();
            QVERIFY2(mnemonic || !a->shortcut().isEmpty(), qPrintable(a->text()));
            for (const QKeySequence& k : a->shortcuts()) {
                QVERIFY2(!shortcuts.contains(k), qPrintable(k.toString() + QStringLiteral(": ") + a->text() +
                                                            QStringLiteral(" and ") + shortcuts.value(k)));
                shortcuts.insert(k, a->text());
            }
        }
        // Mnemonics are unique within each menu (the same letter twice only moves between them).
        for (QMenu* menu : w.menuBar()->findChildren<QMenu*>()) {
            QSet<QKeySequence> seen;
            for (QAction* a : menu->actions()) {
                const QKeySequence m = QKeySequence::mnemonic(a->text());
                if (m.isEmpty() || a->isSeparator()) continue;
                QVERIFY2(!seen.contains(m), qPrintable(menu->title() + QStringLiteral(": ") + a->text()));
                seen.insert(m);
            }
        }
        // The workflow's steps have shortcuts of their own.
        for (const char* name : {"actionOpen", "actionSaveProject", "actionQuantize", "actionEvaluate",
                                 "actionCancelJob", "actionExportRun", "actionCalibrate"}) {
            auto* a = w.findChild<QAction*>(QString::fromLatin1(name));
            QVERIFY2(a, name);
            QVERIFY2(!a->shortcut().isEmpty(), name);
        }
    }

    void ctrlNumberSwitchesTabs()
    {
        MainWindow w;
        w.show();
        w.activateWindow();
        QVERIFY(QTest::qWaitForWindowActive(&w));
        for (int i = w.viewTabs()->count() - 1; i >= 0; --i) {
            QTest::keyClick(&w, Qt::Key(Qt::Key_1 + i), Qt::ControlModifier);
            QCOMPARE(w.viewTabs()->currentIndex(), i);
        }
        // Ctrl+R on no model says why instead of doing nothing.
        QTest::keyClick(&w, Qt::Key_R, Qt::ControlModifier);
        QCOMPARE(w.viewTabs()->currentWidget(), static_cast<QWidget*>(w.quantizePanel()));
        QVERIFY(w.statusBar()->currentMessage().contains(QStringLiteral("open a model first")));
        QTest::keyClick(&w, Qt::Key_Period, Qt::ControlModifier);
        QCOMPARE(w.statusBar()->currentMessage(), QStringLiteral("No job is running"));
    }

    void chartsAndIconButtonsHaveAccessibleNames()
    {
        MainWindow w;
        QVERIFY(openWithTensor(w, QSize(1280, 800)));
        QStringList missing;
        int charts = 0;
        forEachPage(w.viewTabs(), QString(), [&](const QString& where) {
            for (QChartView* v : w.findChildren<QChartView*>()) {
                if (!v->isVisible()) continue;
                ++charts;
                if (v->accessibleName().trimmed().isEmpty()) missing << describe(v, where);
            }
            for (QAbstractButton* b : w.findChildren<QAbstractButton*>()) {
                if (!b->isVisible()) continue;
                // Our buttons: Qt's own sub-buttons (line edit clear, dock title, table corner)
                // are private classes with accessibility of their own.
                const QString cls = QString::fromLatin1(b->metaObject()->className());
                const bool ours = !cls.startsWith(QLatin1Char('Q')) ||
                                  QStringList{QStringLiteral("QPushButton"), QStringLiteral("QToolButton"),
                                              QStringLiteral("QCheckBox"), QStringLiteral("QRadioButton")}
                                      .contains(cls);
                if (!ours || b->objectName().startsWith(QStringLiteral("qt_"))) continue;
                auto* tb = qobject_cast<QToolButton*>(b);
                const bool iconOnly = shownText(b->text()).trimmed().isEmpty() ||
                                      (tb && tb->toolButtonStyle() == Qt::ToolButtonIconOnly && !tb->icon().isNull());
                if (iconOnly && b->accessibleName().trimmed().isEmpty()) missing << describe(b, where);
            }
        });
        QVERIFY(charts >= 10);
        missing.removeDuplicates();
        QVERIFY2(reportAll(missing), qPrintable(QStringLiteral("%1 without a name").arg(missing.size())));
    }

    // Tab from the first control of each page reaches every control of that page (no control
    // left out of the chain, no widget that swallows Tab), pressing the real key; and within a
    // row of controls (the same top edge) Tab goes from left to right.
    void tabReachesEveryControl()
    {
        MainWindow w;
        QVERIFY(openWithTensor(w, QSize(1280, 800)));
        QStringList problems;
        forEachPage(w.viewTabs(), QString(), [&](const QString& where) {
            QWidget* page = w.viewTabs()->currentWidget();
            QList<QWidget*> stops;
            for (QWidget* c : page->findChildren<QWidget*>())
                if (isTabStop(c)) stops << c;
            if (stops.isEmpty()) return;
            QWidget* start = stops.first();
            start->setFocus(Qt::TabFocusReason);
            QSet<QWidget*> visited{start};
            QWidget* previous = start;
            for (int i = 0; i < 400; ++i) {
                QWidget* f = QApplication::focusWidget();
                if (!f) break;
                QTest::keyClick(f, Qt::Key_Tab);
                QWidget* next = QApplication::focusWidget();
                if (next == f) {
                    problems << describe(f, where) + QStringLiteral(" keeps the focus on Tab");
                    break;
                }
                if (next == start) break;
                visited.insert(next);
                if (page->isAncestorOf(next) && page->isAncestorOf(previous)) {
                    const QPoint a = previous->mapTo(&w, QPoint()), b = next->mapTo(&w, QPoint());
                    if (std::abs(a.y() - b.y()) <= 4 && b.x() < a.x())
                        problems << describe(next, where) + QStringLiteral(" follows ") + describe(previous, where) +
                                        QStringLiteral(" but sits left of it in the same row");
                }
                previous = next;
            }
            for (QWidget* c : stops)
                if (!visited.contains(c)) problems << describe(c, where) + QStringLiteral(" is never reached by Tab");
        });
        problems.removeDuplicates();
        QVERIFY2(reportAll(problems), qPrintable(QStringLiteral("%1 focus problems").arg(problems.size())));
    }

    // The README's picture of each main tab at the default size.
    void screenshotOfEachTab()
    {
        MainWindow w;
        QVERIFY(openWithTensor(w, QSize(1280, 800)));
        const QStringList names{QStringLiteral("weights"), QStringLiteral("activations"),
                                QStringLiteral("transform_lab"), QStringLiteral("quantization")};
        QCOMPARE(w.viewTabs()->count(), names.size());
        fillViews(w);
        if (QTest::currentTestFailed()) return;
        for (int i = 0; i < names.size(); ++i) {
            w.viewTabs()->setCurrentIndex(i);
            saveScreenshot(w, QStringLiteral("tab_%1.png").arg(names[i]));
        }
    }
};

int main(int argc, char** argv)
{
    // A 1920x1200 offscreen screen (Qt's offscreen platform reads its screens from a JSON file).
    QTemporaryDir dir;
    const QString config = dir.path() + QStringLiteral("/screens.json");
    {
        QFile f(config);
        if (!f.open(QIODevice::WriteOnly)) return 2;
        f.write(
            R"({"screens": [{"name": "big", "x": 0, "y": 0, "width": 1920, "height": 1200, "logicalDpi": 96, "logicalBaseDpi": 96, "dpr": 1}]})");
    }
    qputenv("QT_QPA_PLATFORM", "offscreen:configfile=" + QFile::encodeName(config));
    QApplication app(argc, argv);
    QTEST_SET_MAIN_SOURCE_PATH
    TestWindowLayout test;
    return QTest::qExec(&test, argc, argv);
}

#include "tst_window_layout.moc"
