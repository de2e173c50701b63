// The Quantization tab driven offscreen with real clicks and key presses: edit a plan cell and
// undo/redo it, bulk-edit selected rows, edit the plan JSON (validation errors shown), save and
// load a plan, run a quantization whose per-layer results appear while it runs (event loop never
// blocked > 50 ms), cancel another, open the per-channel error view, what-if a tensor, compare two
// runs. Every item model runs under QAbstractItemModelTester. Screenshots of the tab's views go to
// ${QB_BINARY_DIR}/screenshots/quantize_*.png.

#include "event_loop_probe.h"
#include "charts/histogram_chart.h"
#include "charts/quant_charts.h"
#include "models/plan_table_model.h"
#include "io/json_value.h"
#include "pipeline/project.h"
#include "models/quant_run_model.h"
#include "models/run_history_model.h"
#include "widgets/activation_settings.h"
#include "widgets/budget_planner.h"
#include "widgets/job_status.h"
#include "widgets/main_window.h"
#include "widgets/model_explorer.h"
#include "widgets/plan_editor.h"
#include "widgets/quantize_panel.h"
#include "widgets/perplexity_panel.h"
#include "widgets/run_compare_view.h"
#include "widgets/run_header.h"
#include "widgets/tensor_error_view.h"

#include <QAbstractItemModelTester>
#include <set>
#include <QApplication>
#include <QBarSeries>
#include <QBarSet>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QElapsedTimer>
#include <QHeaderView>
#include <QLabel>
#include <QLegend>
#include <QLegendMarker>
#include <QLineEdit>
#include <QLineSeries>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QScatterSeries>
#include <QSettings>
#include <QSignalSpy>
#include <QSpinBox>
#include <QSlider>
#include <QStandardPaths>
#include <QTableWidget>
#include <QDoubleSpinBox>
#include <QMenu>
#include <QTabBar>
#include <QToolButton>
#include <QTabWidget>
#include <QTableView>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>
#include <QToolButton>
#include <QUndoStack>

#include <ctime>

using namespace qb::ui;
using qbtest::EventLoopProbe;

namespace {

struct Fixture {
    MainWindow w;
    QuantizePanel* panel = nullptr;
    bool open(QSize size = QSize(1500, 950))
    {
        w.resize(size);
        w.show();
        if (!QTest::qWaitForWindowExposed(&w)) return false;
        w.activateWindow();
        if (!QTest::qWaitForWindowActive(&w)) return false;
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(QStringLiteral(QB_DEMO_DIR));
        if (!loaded.wait(20000)) return false;
        panel = w.findChild<QuantizePanel*>();
        if (!panel) return false;
        clickTab(w.viewTabs()->tabBar(), w.viewTabs()->indexOf(panel));
        panel->windowsSpin()->setValue(8); // tiny calibration: 8 windows x 64 tokens
        panel->lengthSpin()->setValue(64);
        return w.viewTabs()->currentWidget() == panel;
    }
    static void clickTab(QTabBar* bar, int index)
    {
        QTest::mouseClick(bar, Qt::LeftButton, {}, bar->tabRect(index).center());
    }
    void showView(QWidget* view) { clickTab(panel->views()->tabBar(), panel->views()->indexOf(view)); }
};

void clickCell(QTableView* t, int row, int col, Qt::KeyboardModifiers mod = {})
{
    QTest::mouseClick(t->viewport(), Qt::LeftButton, mod, t->visualRect(t->model()->index(row, col)).center());
}

void screenshot(QWidget* w, const QString& name)
{
    // packaging/screenshots.sh sets QB_SCREENSHOT_DIR to refresh the README's images.
    QString dir = qEnvironmentVariable("QB_SCREENSHOT_DIR");
    if (dir.isEmpty()) dir = QStringLiteral(QB_BINARY_DIR "/screenshots");
    QDir().mkpath(dir);
    // Pending layout requests (a chart's new title is laid out on the next event loop pass).
    QCoreApplication::sendPostedEvents(nullptr, QEvent::LayoutRequest);
    QCoreApplication::sendPostedEvents();
    QVERIFY(w->grab().save(dir + QStringLiteral("/quantize_%1.png").arg(name)));
}

int bitsAt(PlanTableModel* m, int row) { return m->index(row, PlanTableModel::Bits).data().toInt(); }
} // namespace

class TestQuantizePanel : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { QStandardPaths::setTestModeEnabled(true); }

    void editCellUndoRedo()
    {
        Fixture f;
        QVERIFY(f.open());
        PlanEditor* ed = f.panel->planEditor();
        PlanTableModel* m = ed->model();
        QAbstractItemModelTester tester(m, QAbstractItemModelTester::FailureReportingMode::QtTest);
        QCOMPARE(m->rowCount(), 4 * 7);
        QCOMPARE(bitsAt(m, 0), 4);
        const QString totals4 = ed->totalsLabel()->text();
        QVERIFY2(totals4.contains(QStringLiteral("bits/weight")), qPrintable(totals4));

        // Click the bits cell of row 0, F2, type 3, Enter.
        QTableView* t = ed->table();
        const QRect r = t->visualRect(m->index(0, PlanTableModel::Bits));
        QTest::mouseClick(t->viewport(), Qt::LeftButton, {}, r.center());
        QTest::keyClick(t, Qt::Key_F2);
        QSpinBox* spin = nullptr;

        QTRY_VERIFY((spin = t->viewport()->findChild<QSpinBox*>()) != nullptr);
        QTest::keyClick(spin, Qt::Key_A, Qt::ControlModifier);
        QTest::keyClicks(spin, QStringLiteral("3"));
        QTest::keyClick(spin, Qt::Key_Return);
        QTRY_COMPARE(bitsAt(m, 0), 3);
        QCOMPARE(bitsAt(m, 1), 4);
        QCOMPARE(ed->undoStack()->count(), 1);
        QCOMPARE(m->plan().rules.size(), std::size_t(1)); // the edit became an explicit rule
        QCOMPARE(QString::fromStdString(m->plan().rules[0].match), QStringLiteral("model.layers.0.self_attn.q_proj"));
        QVERIFY(ed->totalsLabel()->text() != totals4);
        QVERIFY(ed->jsonEdit()->toPlainText().contains(QStringLiteral("model.layers.0.self_attn.q_proj")));

        // Ctrl+Z in the table undoes, Ctrl+Shift+Z redoes.
        t->setFocus();
        QTest::keyClick(t, Qt::Key_Z, Qt::ControlModifier);
        QCOMPARE(bitsAt(m, 0), 4);
        QVERIFY(m->plan().rules.empty());
        QCOMPARE(ed->totalsLabel()->text(), totals4);
        QTest::keyClick(t, Qt::Key_Z, Qt::ControlModifier | Qt::ShiftModifier);
        QCOMPARE(bitsAt(m, 0), 3);

        // Method cell: the editor is a combo built from the traits table.
        clickCell(t, 2, PlanTableModel::Method);
        QTest::keyClick(t, Qt::Key_F2);
        QComboBox* combo = nullptr;
        QTRY_VERIFY((combo = t->viewport()->findChild<QComboBox*>(QStringLiteral("methodEditor"))) != nullptr);
        QCOMPARE(combo->count(), int(qb::quant::allMethodTraits().size()));
        combo->setCurrentIndex(combo->findData(QStringLiteral("rtn")));
        QTest::keyClick(combo, Qt::Key_Return);
        QTRY_COMPARE(m->index(2, PlanTableModel::Method).data().toString(), QStringLiteral("RTN"));

        // Space on a Skip cell toggles it.
        t->setCurrentIndex(m->index(5, PlanTableModel::Skip));
        QTest::keyClick(t, Qt::Key_Space);
        QCOMPARE(m->index(5, PlanTableModel::Skip).data(Qt::CheckStateRole).toInt(), int(Qt::Checked));
        QCOMPARE(m->index(5, PlanTableModel::Bpw).data(Qt::EditRole).toDouble(), 16.0);

        // An invalid rule in the JSON is rejected with the parser's message; the plan stays.
        const auto before = m->plan();
        ed->jsonEdit()->setPlainText(QStringLiteral(
            R"({"default": {"method": "neuqi", "bits": 4}, "rules": [{"match": "model.layers.*.mlp.*", "sym": true}]})"));
        QTest::mouseClick(ed->jsonApply(), Qt::LeftButton);
        QVERIFY2(ed->messageLabel()->text().contains(QStringLiteral("sym")), qPrintable(ed->messageLabel()->text()));
        QVERIFY(m->plan() == before);
        // A valid glob rule applies to every matching row.
        ed->jsonEdit()->setPlainText(QStringLiteral(
            R"({"default": {"method": "gptq", "bits": 4, "group_size": 128}, "rules": [{"match": "model.layers.*.mlp.down_proj", "bits": 8}]})"));
        QTest::mouseClick(ed->jsonApply(), Qt::LeftButton);
        QCOMPARE(bitsAt(m, 6), 8);
        QCOMPARE(bitsAt(m, 13), 8);
        QCOMPARE(bitsAt(m, 0), 4);

        // Save and load the CLI's plan JSON.
        QTemporaryDir tmp;
        const QString path = tmp.filePath(QStringLiteral("plan.json"));
        QVERIFY(ed->savePlanFile(path).isEmpty());
        const auto saved = m->plan();
        QTest::keyClick(t, Qt::Key_Z, Qt::ControlModifier);
        QVERIFY(!(m->plan() == saved));
        QVERIFY(ed->loadPlanFile(path).isEmpty());
        QVERIFY(m->plan() == saved);
        QVERIFY(
            ed->loadPlanFile(tmp.filePath(QStringLiteral("missing.json"))).contains(QStringLiteral("missing.json")));
        f.showView(ed);
        screenshot(f.panel, QStringLiteral("plan"));
    }

    void bulkEdit()
    {
        Fixture f;
        QVERIFY(f.open());
        PlanEditor* ed = f.panel->planEditor();
        PlanTableModel* m = ed->model();
        QAbstractItemModelTester tester(m, QAbstractItemModelTester::FailureReportingMode::QtTest);
        QTableView* t = ed->table();
        clickCell(t, 0, PlanTableModel::Tensor);
        clickCell(t, 6, PlanTableModel::Tensor, Qt::ShiftModifier);
        clickCell(t, 10, PlanTableModel::Tensor, Qt::ControlModifier);
        QCOMPARE(t->selectionModel()->selectedRows().size(), 8);
        ed->bulkField()->setCurrentIndex(ed->bulkField()->findData(int(PlanTableModel::Bits)));
        QTest::mouseClick(ed->bulkValue(), Qt::LeftButton);
        QTest::keyClicks(ed->bulkValue(), QStringLiteral("3"));
        QTest::mouseClick(ed->bulkApply(), Qt::LeftButton);
        for (int r = 0; r <= 6; ++r)
            QCOMPARE(bitsAt(m, r), 3);
        QCOMPARE(bitsAt(m, 10), 3);
        QCOMPARE(bitsAt(m, 7), 4);
        QCOMPARE(ed->undoStack()->count(), 1); // one step for the whole selection
        // A bad value is refused with a message.
        ed->bulkField()->setCurrentIndex(ed->bulkField()->findData(int(PlanTableModel::Method)));
        ed->bulkValue()->setText(QStringLiteral("nosuchmethod"));
        QTest::mouseClick(ed->bulkApply(), Qt::LeftButton);
        QVERIFY(ed->messageLabel()->text().contains(QStringLiteral("nosuchmethod")));
        QCOMPARE(ed->undoStack()->count(), 1);
        // Bulk skip, then undo both steps with the keyboard.
        ed->bulkField()->setCurrentIndex(ed->bulkField()->findData(int(PlanTableModel::Skip)));
        ed->bulkValue()->setText(QStringLiteral("true"));
        QTest::mouseClick(ed->bulkApply(), Qt::LeftButton);
        QCOMPARE(m->index(3, PlanTableModel::Skip).data(Qt::CheckStateRole).toInt(), int(Qt::Checked));
        t->setFocus();
        QTest::keyClick(t, Qt::Key_Z, Qt::ControlModifier);
        QTest::keyClick(t, Qt::Key_Z, Qt::ControlModifier);
        for (int r = 0; r < m->rowCount(); ++r)
            QCOMPARE(bitsAt(m, r), 4);
        QVERIFY(m->plan().rules.empty());
    }

    // Issue 11 item 8: the storage target is edited like bits and method; a target implies the
    // bits (editing bits moves within the family) and the totals show the whole GGUF file, equal
    // to the exporter's plan.
    // Issue 19 item 6: what "Apply to plan" writes, on its own (the GUI path is in
    // runInspectWhatIfCompareCancel): one tensor's rule, one undo step, off its GGUF type onto the
    // free grid the what-if solved; a method without a symmetric grid is stored asymmetric; a
    // setting the plan refuses leaves the plan as it was, with the reason.
    void applyWhatIfSettings()
    {
        Fixture f;
        QVERIFY(f.open());
        PlanTableModel* m = f.panel->planEditor()->model();
        QAbstractItemModelTester tester(m, QAbstractItemModelTester::FailureReportingMode::QtTest);
        QList<int> all;
        for (int r = 0; r < m->rowCount(); ++r)
            all << r;
        QCOMPARE(m->setField(all, PlanTableModel::Target, QStringLiteral("gguf:Q4_K")), QString());
        const int row = 9; // layers.1.self_attn.v_proj
        const QString name = m->ruleName(row);
        const QString target = m->index(row, PlanTableModel::Target).data().toString(); // Q4_K or its fallback
        QVERIFY2(target != QStringLiteral("none"), qPrintable(target));
        const int targetBits = bitsAt(m, row);
        QUndoStack* undo = m->undoStack();
        const int steps = undo->count();
        QCOMPARE(m->setTensorSettings(name + QStringLiteral(".weight"), qb::quant::Method::Gptq, 3, 64, true),
                 QString());
        QCOMPARE(undo->count(), steps + 1);
        QCOMPARE(m->index(row, PlanTableModel::Target).data().toString(), QStringLiteral("none"));
        QCOMPARE(bitsAt(m, row), 3);
        QCOMPARE(m->index(row, PlanTableModel::Group).data().toInt(), 64);
        QVERIFY(m->resolved().tensors[std::size_t(row)].options.grid.sym);
        QCOMPARE(m->index(row - 1, PlanTableModel::Target).data().toString(), target); // only it
        QCOMPARE(m->plan().rules.back().match, name.toStdString());
        undo->undo();
        QCOMPARE(m->index(row, PlanTableModel::Target).data().toString(), target);
        QCOMPARE(bitsAt(m, row), targetBits);
        // NeUQI has no symmetric grid: applied asymmetric, not refused.
        QCOMPARE(m->setTensorSettings(name, qb::quant::Method::Neuqi, 4, 32, true), QString());
        QVERIFY(!m->resolved().tensors[std::size_t(row)].options.grid.sym);
        QCOMPARE(m->resolved().tensors[std::size_t(row)].method, qb::quant::Method::Neuqi);
        // Settings the plan cannot hold are refused with the reason; nothing changes.
        const qb::pipeline::QuantPlan before = m->plan();
        const int count = undo->count();
        QVERIFY(m->setTensorSettings(name, qb::quant::Method::Gptq, 20, 32, false).contains(QStringLiteral("bits")));
        QVERIFY(m->setTensorSettings(name, qb::quant::Method::Gptq, 4, 0, false).contains(QStringLiteral("group")));
        QCOMPARE(m->plan(), before);
        QCOMPARE(undo->count(), count);
        QVERIFY(!m->setTensorSettings(QStringLiteral("model.layers.9.mlp.up_proj"), qb::quant::Method::Gptq, 4, 32,
                                      false)
                     .isEmpty()); // not a tensor of this model
    }

    void targetColumn()
    {
        Fixture f;
        QVERIFY(f.open());
        PlanEditor* ed = f.panel->planEditor();
        PlanTableModel* m = ed->model();
        QAbstractItemModelTester tester(m, QAbstractItemModelTester::FailureReportingMode::QtTest);
        QTableView* t = ed->table();
        QCOMPARE(m->index(0, PlanTableModel::Target).data().toString(), QStringLiteral("none"));
        // The Target cell edits with a combo of the storage targets.
        clickCell(t, 0, PlanTableModel::Target);
        QTest::keyClick(t, Qt::Key_F2);
        QComboBox* combo = nullptr;
        QTRY_VERIFY((combo = t->viewport()->findChild<QComboBox*>(QStringLiteral("targetEditor"))) != nullptr);
        QVERIFY(combo->findText(QStringLiteral("Q4_K")) >= 0 && combo->findText(QStringLiteral("F16")) >= 0);
        combo->setCurrentIndex(combo->findText(QStringLiteral("Q8_0")));
        QTest::keyClick(combo, Qt::Key_Return);
        QTRY_COMPARE(m->index(0, PlanTableModel::Target).data().toString(), QStringLiteral("Q8_0"));
        QCOMPARE(bitsAt(m, 0), 8);
        QVERIFY(!(m->flags(m->index(0, PlanTableModel::Group)) & Qt::ItemIsEditable)); // implied by the target
        // Every tensor to Q4_K: the demo's rows of 128/352 fall back to Q5_0, as llama.cpp does.
        t->selectAll();
        ed->bulkField()->setCurrentIndex(ed->bulkField()->findData(int(PlanTableModel::Target)));
        ed->bulkValue()->setText(QStringLiteral("gguf:Q4_K"));
        QTest::mouseClick(ed->bulkApply(), Qt::LeftButton);
        QCOMPARE(m->index(5, PlanTableModel::Target).data().toString(), QStringLiteral("Q5_0"));
        QVERIFY(m->index(5, PlanTableModel::Target).data(Qt::ToolTipRole).toString().contains("falls back"));
        // Bits of a target row move within its family; bits no type holds are refused.
        t->clearSelection();
        clickCell(t, 3, PlanTableModel::Tensor);
        ed->bulkField()->setCurrentIndex(ed->bulkField()->findData(int(PlanTableModel::Bits)));
        ed->bulkValue()->setText(QStringLiteral("8"));
        QTest::mouseClick(ed->bulkApply(), Qt::LeftButton);
        QCOMPARE(m->index(3, PlanTableModel::Target).data().toString(), QStringLiteral("Q8_0"));
        ed->bulkValue()->setText(QStringLiteral("7"));
        QTest::mouseClick(ed->bulkApply(), Qt::LeftButton);
        QVERIFY2(ed->messageLabel()->text().contains(QStringLiteral("no GGUF type stores 7-bit codes")),
                 qPrintable(ed->messageLabel()->text()));
        // The whole file, before anything runs, as the exporter plans it.
        QTRY_VERIFY(m->plannedGgufBytes() > m->resolved().sizeBytes);
        auto ck = qb::io::openCheckpoint(QB_DEMO_DIR);
        QVERIFY(ck.ok());
        auto planned = qb::pipeline::planGgufExport(*ck, m->resolved());
        QVERIFY(planned.ok());
        const double rel = double(m->plannedGgufBytes()) / double(planned->bytes) - 1.0;
        QVERIFY2(std::fabs(rel) < 0.001, qPrintable(QString::number(rel)));
        QVERIFY2(ed->totalsLabel()->text().contains(QStringLiteral("GGUF file")),
                 qPrintable(ed->totalsLabel()->text()));
    }

    // Issue 19 item 1: GPTQ's act-order and damping are editable in the plan table like the other
    // options, through the header's column chooser (hidden by default so the table fits).
    void actOrderAndDampingColumns()
    {
        QSettings().remove(QStringLiteral("planEditor/hiddenColumns")); // the default: both hidden
        Fixture f;
        QVERIFY(f.open());
        PlanEditor* ed = f.panel->planEditor();
        PlanTableModel* m = ed->model();
        QAbstractItemModelTester tester(m, QAbstractItemModelTester::FailureReportingMode::QtTest);
        QTableView* t = ed->table();
        QVERIFY(t->isColumnHidden(PlanTableModel::ActOrder) && t->isColumnHidden(PlanTableModel::Damping));
        ed->setColumnShown(PlanTableModel::ActOrder, true);
        ed->setColumnShown(PlanTableModel::Damping, true);
        QVERIFY(!t->isColumnHidden(PlanTableModel::ActOrder));
        // Act-order: a click on row 2's checkbox becomes a rule (GPTQ, the GUI's default plan).
        QCOMPARE(m->index(2, PlanTableModel::ActOrder).data(Qt::CheckStateRole).toInt(), int(Qt::Unchecked));
        QVERIFY(m->setData(m->index(2, PlanTableModel::ActOrder), Qt::Checked, Qt::CheckStateRole));
        QVERIFY(m->resolved().tensors[2].options.actOrder);
        QVERIFY(!m->resolved().tensors[3].options.actOrder);
        // Damping: edited like bits; out of range is refused with the reason.
        QVERIFY(m->setData(m->index(4, PlanTableModel::Damping), QStringLiteral("0.05"), Qt::EditRole));
        QCOMPARE(m->resolved().tensors[4].options.damping, 0.05);
        QVERIFY(!m->setData(m->index(4, PlanTableModel::Damping), QStringLiteral("2"), Qt::EditRole));
        QVERIFY2(ed->messageLabel()->text().contains(QStringLiteral("damping must be a number in [0, 1]")),
                 qPrintable(ed->messageLabel()->text()));
        // RTN has no Hessian: neither applies, and the cells say so.
        QVERIFY(m->setField({5}, PlanTableModel::Method, QStringLiteral("rtn")).isEmpty());
        QVERIFY(!(m->flags(m->index(5, PlanTableModel::ActOrder)) & Qt::ItemIsUserCheckable));
        QVERIFY(!(m->flags(m->index(5, PlanTableModel::Damping)) & Qt::ItemIsEditable));
        QVERIFY(m->index(5, PlanTableModel::Damping).data(Qt::ToolTipRole).toString().contains("uses no Hessian"));
        // The choice is remembered for the next window.
        ed->setColumnShown(PlanTableModel::Damping, false);
        Fixture g;
        QVERIFY(g.open());
        QVERIFY(!g.panel->planEditor()->table()->isColumnHidden(PlanTableModel::ActOrder));
        QVERIFY(g.panel->planEditor()->table()->isColumnHidden(PlanTableModel::Damping));
        QSettings().remove(QStringLiteral("planEditor/hiddenColumns")); // back to the default for later tests
    }

    // Issue 13 item 6: a fractional average is entered in the plan table's Bits cell for CMPQ (a
    // decimal spin box), shown as the tensor's average; methods with whole bits refuse it, and an
    // average outside [1, 8] is refused, both with the reason.
    void cmpqFractionalBitsInThePlanTable()
    {
        Fixture f;
        QVERIFY(f.open());
        PlanEditor* ed = f.panel->planEditor();
        PlanTableModel* m = ed->model();
        QAbstractItemModelTester tester(m, QAbstractItemModelTester::FailureReportingMode::QtTest);
        QVERIFY(m->setField({4}, PlanTableModel::Method, QStringLiteral("cmpq")).isEmpty());
        const QModelIndex bits = m->index(4, PlanTableModel::Bits);
        QCOMPARE(bits.data(Qt::EditRole).typeId(), int(QMetaType::Double));
        QVERIFY2(m->setData(bits, QStringLiteral("2.5"), Qt::EditRole), qPrintable(ed->messageLabel()->text()));
        QCOMPARE(m->resolved().tensors[4].cmpq.bits, 2.5);
        QCOMPARE(m->resolved().tensors[4].bitsPerWeight, 2.5);
        QCOMPARE(bits.data(Qt::DisplayRole).toString(), QStringLiteral("2.5"));
        QVERIFY(m->plan().rules.back().settings.avgBits && !m->plan().rules.back().settings.bits);
        std::unique_ptr<QWidget> editor(
            ed->table()->itemDelegate()->createEditor(ed->table()->viewport(), QStyleOptionViewItem(), bits));
        auto* spin = qobject_cast<QDoubleSpinBox*>(editor.get());
        QVERIFY(spin);
        ed->table()->itemDelegate()->setEditorData(spin, bits);
        QCOMPARE(spin->value(), 2.5);
        spin->setValue(3.25);
        ed->table()->itemDelegate()->setModelData(spin, m, bits);
        QCOMPARE(m->resolved().tensors[4].cmpq.bits, 3.25);
        // Whole bits again: bits, not an average.
        QVERIFY(m->setData(bits, QStringLiteral("3"), Qt::EditRole));
        QVERIFY(m->plan().rules.back().settings.bits == 3 && !m->plan().rules.back().settings.avgBits);
        QCOMPARE(m->resolved().tensors[4].cmpq.bits, 3.0);
        QVERIFY(!m->setData(bits, QStringLiteral("9.5"), Qt::EditRole));
        QVERIFY2(ed->messageLabel()->text().contains(QStringLiteral("out of range [1, 8]")),
                 qPrintable(ed->messageLabel()->text()));
        // GPTQ (the default method) takes whole bits: a fraction is refused with the reason.
        QCOMPARE(m->index(5, PlanTableModel::Bits).data(Qt::EditRole).typeId(), int(QMetaType::Int));
        QVERIFY(!m->setData(m->index(5, PlanTableModel::Bits), QStringLiteral("2.5"), Qt::EditRole));
        QVERIFY2(ed->messageLabel()->text().contains(QStringLiteral("takes integer bits")),
                 qPrintable(ed->messageLabel()->text()));
        QCOMPARE(m->resolved().tensors[5].options.grid.bits, 4);
        // Undo goes back through the edits.
        m->undoStack()->undo();
        QCOMPARE(m->resolved().tensors[4].cmpq.bits, 3.25);
    }

    // Issue 13 item 7: a CMPQ tensor shows its channel map (bits per input channel beside the
    // score, in place or sorted; outlier channels marked) and a channel picker (spin box or a click
    // on the map) that redraws the histogram with that channel's weights and codebook.
    void cmpqChannelMapAndPicker()
    {
        Fixture f;
        QVERIFY(f.open(QSize(1280, 800)));
        QuantizePanel* p = f.panel;
        PlanTableModel* m = p->planEditor()->model();
        QVERIFY(m->setField({4}, PlanTableModel::Method, QStringLiteral("cmpq")).isEmpty());
        QVERIFY(m->setField({4}, PlanTableModel::Bits, QStringLiteral("3.5")).isEmpty());
        const QString name = QString::fromStdString(m->resolved().tensors[4].name);
        QSignalSpy done(p, &QuantizePanel::quantizeFinished);
        QTest::mouseClick(p->quantizeButton(), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));

        TensorErrorView* tv = p->tensorView();
        QSignalSpy ready(tv, &TensorErrorView::analysisReady);
        QVERIFY(f.w.explorer()->selectTensor(name));
        QVERIFY(ready.wait(30000));
        f.showView(tv);
        QVERIFY(tv->channelMapBox()->isVisible());
        const auto a = tv->analysis();
        QVERIFY(a && a->cmpq);
        const auto& c = *a->cmpq;
        const int cols = int(c.channelBits.size());
        CmpqChannelMapChart* map = tv->channelMapChart();
        QCOMPARE(map->bitsSeries()->count(), 2 * cols);
        QCOMPARE(map->scoreSeries()->count(), cols);
        const int top = int(std::max_element(c.channelScore.begin(), c.channelScore.end()) - c.channelScore.begin());
        QCOMPARE(c.channel, top); // the top-scored channel first
        QCOMPARE(tv->channelSpin()->value(), top);
        QCOMPARE(map->chosenSeries()->at(0).x(), double(top));
        std::set<int> outlierChannels;
        for (std::int64_t flat : c.outliers)
            outlierChannels.insert(int(flat % cols));
        QCOMPARE(map->outlierSeries()->count(), int(outlierChannels.size()));
        QVERIFY(map->toolTip().contains(QStringLiteral("in place")));
        QVERIFY2(map->toolTip().contains(QStringLiteral("%1 sparse outlier").arg(c.outliers.size())),
                 qPrintable(map->toolTip()));
        // Sorted by score: scores and bits never rise (the allocation is monotone in the score).
        tv->sortedCheck()->setChecked(true);
        QVERIFY(map->sorted() && map->toolTip().contains(QStringLiteral("sorted by score")));
        for (int i = 1; i < cols; ++i) {
            QVERIFY(map->scoreSeries()->at(i).y() <= map->scoreSeries()->at(i - 1).y());
            QVERIFY(map->bitsSeries()->at(2 * i).y() <= map->bitsSeries()->at(2 * i - 1).y());
        }
        QCOMPARE(map->channelAt(0), top);
        QCOMPARE(map->chosenSeries()->at(0).x(), 0.0);
        // The picker: the lowest-scored channel; the histogram shows its weights and codebook.
        const int low = map->channelAt(cols - 1);
        QVERIFY(low != top);
        tv->channelSpin()->setValue(low);
        QVERIFY(ready.wait(30000));
        QCOMPARE(tv->analysis()->cmpq->channel, low);
        QVERIFY2(tv->histogramChart()->chart()->title().contains(QStringLiteral("Channel %1 ").arg(low)),
                 qPrintable(tv->histogramChart()->chart()->title()));
        const int lowBits = tv->analysis()->cmpq->channelBits[std::size_t(low)];
        if (lowBits < 16) QCOMPARE(tv->histogramChart()->gridSeries()->count(), 3 * (1 << lowBits));
        // A click on the map picks the channel drawn there (sorted: the channel of that rank).
        const int rank = cols / 2;
        const QPointF inChart = map->chart()->mapToPosition(QPointF(rank, 1.0), map->bitsSeries());
        const QPoint inView = map->mapFromScene(map->chart()->mapToScene(inChart));
        QTest::mouseClick(map->viewport(), Qt::LeftButton, {}, inView);
        QVERIFY(ready.wait(30000));
        QCOMPARE(tv->analysis()->cmpq->channel, map->channelAt(rank));
        QCOMPARE(tv->channelSpin()->value(), map->channelAt(rank));
        screenshot(tv, QStringLiteral("cmpq_channel_map"));
        // A non-CMPQ tensor hides the map.
        QVERIFY(f.w.explorer()->selectTensor(QString::fromStdString(m->resolved().tensors[5].name)));
        QVERIFY(ready.wait(30000));
        QVERIFY(!tv->channelMapBox()->isVisible());
    }

    void runInspectWhatIfCompareCancel()
    {
        Fixture f;
        QVERIFY(f.open(QSize(1280, 800))); // the default window size: the screenshots are what a user sees
        QuantizePanel* p = f.panel;
        QAbstractItemModelTester t1(p->reports(), QAbstractItemModelTester::FailureReportingMode::QtTest);
        QAbstractItemModelTester t2(p->runs(), QAbstractItemModelTester::FailureReportingMode::QtTest);
        QVERIFY(p->calibText()->text().endsWith(QStringLiteral("calib.txt")));
        QVERIFY(p->perplexityCheck()->isChecked());

        // Run 1: the default plan (GPTQ 4 bits g128). Layers appear before the run ends.
        QSignalSpy layers(p, &QuantizePanel::layerFinished);
        QSignalSpy done(p, &QuantizePanel::quantizeFinished);
        int rowsWhenFirstLayer = -1;
        bool finishedWhenFirstLayer = true;
        connect(p, &QuantizePanel::layerFinished, this, [&] {
            if (rowsWhenFirstLayer < 0) {
                rowsWhenFirstLayer = p->reports()->rowCount();
                finishedWhenFirstLayer = !done.isEmpty();
            }
        });
        EventLoopProbe probe;
        QTest::mouseClick(p->quantizeButton(), Qt::LeftButton);
        QVERIFY(f.w.jobStatus()->isBusy());
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        qInfo("quantize: event loop blocked at most %.1f ms (longest wall-clock gap %.1f ms)", probe.maxBusyMs(),
              probe.maxGapMs());
        QVERIFY2(probe.maxBusyMs() < 50.0, qPrintable(QString::number(probe.maxBusyMs())));
        QCOMPARE(layers.size(), 4);
        QCOMPARE(rowsWhenFirstLayer, 7);
        QVERIFY(!finishedWhenFirstLayer);
        QCOMPARE(p->reports()->rowCount(), 28);
        QCOMPARE(p->runs()->rowCount(), 1);
        auto run1 = p->runs()->run(0);
        QVERIFY(run1->perplexity && *run1->perplexity > 1.0);
        // KL against the original beside perplexity, in the run table (tooltip: the other figures).
        QVERIFY(run1->kl && run1->kl->mean > 0 && run1->kl->top1Agreement > 0.5);
        QCOMPARE(p->runs()->index(0, QuantRunModel::Kl).data().toString(), QString::number(run1->kl->mean, 'f', 4));
        QCOMPARE(p->runs()->index(0, QuantRunModel::Top1).data().toString(),
                 QStringLiteral("%1 %").arg(100 * run1->kl->top1Agreement, 0, 'f', 1));
        QVERIFY(p->runs()->index(0, QuantRunModel::Kl).data(Qt::ToolTipRole).toString().contains("99th percentile"));
        QCOMPARE(p->runs()->headerData(QuantRunModel::Kl, Qt::Horizontal).toString(), QStringLiteral("KL"));
        QCOMPARE(run1->calib->count, 8);
        QCOMPARE(run1->calib->seqlen, 64);
        QCOMPARE(p->layerChart()->plotted(0).size(), std::size_t(4));
        QCOMPARE(p->layerChart()->plotted(0)[2], run1->layerErrors()[2]);
        // Issue 19 item 5: the per-layer error weights each tensor by its parameter count (the
        // demo's MLP tensors hold 2.75x the attention's), and the chart says so.
        QVERIFY(run1->layerErrorsWeighted());
        QVERIFY2(p->layerChart()->chart()->title().contains(run1->label()),
                 qPrintable(p->layerChart()->chart()->title()));
        QCOMPARE(p->layerChart()->weighting(), QStringLiteral("param-weighted"));
        QVERIFY2(p->layerChart()->chart()->title().contains(QStringLiteral("param-weighted")),
                 qPrintable(p->layerChart()->chart()->title()));
        {
            double num = 0, den = 0, plain = 0;
            int n = 0;
            for (const auto& r : run1->result->tensors) {
                if (r.layer != 2) continue;
                const auto* t = f.w.checkpoint()->find(r.name);
                QVERIFY(t && t->shape.size() == 2);
                const double params = double(t->shape[0] * t->shape[1]);
                num += params * r.relativeError;
                den += params;
                plain += r.relativeError;
                ++n;
            }
            QCOMPARE(n, 7);
            QVERIFY(std::abs(run1->layerErrors()[2] - num / den) < 1e-12);
            QVERIFY(std::abs(num / den - plain / n) > 1e-6); // the weighting changes the figure
            // Without the shapes: a plain mean, and the chart says so.
            const LayerErrors unweighted = layerErrorsOf(run1->result->tensors, {});
            QVERIFY(!unweighted.weighted);
            QVERIFY(std::abs(unweighted.values[2] - plain / n) < 1e-12);
            LayerErrorChart probe(QStringLiteral("probe"));
            probe.setRuns({QStringLiteral("x")}, {unweighted.values}, unweighted.weighted);
            QCOMPARE(probe.weighting(), QStringLiteral("plain"));
            QVERIFY(probe.chart()->title().contains(QStringLiteral("plain mean")));
        }
        // Runs have names: the default from the plan, in the run list, the results header and the
        // run history (with the run's perplexity and KL beside the original's evaluations).
        QCOMPARE(run1->name, QStringLiteral("GPTQ 4b g128"));
        QCOMPARE(p->runs()->index(0, QuantRunModel::Name).data().toString(), QStringLiteral("GPTQ 4b g128"));
        QCOMPARE(p->runHeader()->runId(), run1->id);
        QCOMPARE(p->runHeader()->nameEdit()->text(), QStringLiteral("GPTQ 4b g128"));
        QVERIFY2(p->runHeader()->details()->text().contains(
                     QStringLiteral("perplexity %1").arg(*run1->perplexity, 0, 'f', 3)),
                 qPrintable(p->runHeader()->details()->text()));
        RunHistoryModel* history = f.w.perplexityPanel()->history();
        QAbstractItemModelTester t3(history, QAbstractItemModelTester::FailureReportingMode::QtTest);
        QCOMPARE(history->rowCount(), 1);
        QCOMPARE(history->record(0).runId, run1->id);
        QCOMPARE(history->index(0, RunHistoryModel::Variant).data().toString(), run1->name);
        QCOMPARE(history->index(0, RunHistoryModel::Perplexity).data(Qt::EditRole).toDouble(), *run1->perplexity);
        QCOMPARE(history->index(0, RunHistoryModel::Kl).data(Qt::EditRole).toDouble(), run1->kl->mean);
        QCOMPARE(history->index(0, RunHistoryModel::Ctx).data().toInt(), 128);
        QCOMPARE(history->headerData(RunHistoryModel::Kl, Qt::Horizontal).toString(), QStringLiteral("KL"));
        f.showView(p->runHeader()->parentWidget());
        QVERIFY(p->runHeader()->isVisible() && p->reportTable()->isVisible());
        screenshot(p, QStringLiteral("results"));
        screenshot(&f.w, QStringLiteral("results_1280x800"));

        // Per-channel view of a tensor picked in the explorer.
        TensorErrorView* tv = p->tensorView();
        QSignalSpy ready(tv, &TensorErrorView::analysisReady);
        QSignalSpy preview(tv, &TensorErrorView::previewFinished);
        const QString name = QStringLiteral("model.layers.2.mlp.down_proj.weight");
        QVERIFY(f.w.explorer()->selectTensor(name));
        QVERIFY(ready.wait(30000));
        f.showView(tv);
        QVERIFY(tv->isVisible());
        const auto a = tv->analysis();
        QVERIFY(a);
        QCOMPARE(tv->outChannelChart()->series()->count(), 128); // down_proj: 128 x 352
        QCOMPARE(tv->inChannelChart()->series()->count(), 352);
        QCOMPARE(tv->histogramChart()->gridSeries()->count(), 3 * 16); // 4-bit grid of row 0
        QVERIFY(tv->histogramChart()->beforeSeries()->count() > 0);
        // The analysis reproduces the job's own error for this tensor (same Hessian for down_proj,
        // which the job computes after the rest of the layer is quantized: agree to 1e-6).
        const auto* rep = run1->result->find(name.toStdString());
        QVERIFY(rep);
        QVERIFY2(std::abs(a->errors.relativeError - rep->relativeError) < 1e-6 * std::max(1.0, rep->relativeError) ||
                     std::abs(a->errors.relativeError - rep->relativeError) / rep->relativeError < 0.05,
                 qPrintable(QStringLiteral("%1 vs %2").arg(a->errors.relativeError).arg(rep->relativeError)));

        // What-if: two bits fewer with the keyboard; the preview answers well under a second.
        QVERIFY(preview.wait(10000)); // the preview of the tensor's own settings
        tv->bitsSpin()->setFocus();
        QTest::keyClick(tv->bitsSpin(), Qt::Key_Down);
        QTest::keyClick(tv->bitsSpin(), Qt::Key_Down);
        QTRY_VERIFY_WITH_TIMEOUT(tv->previewLabel()->text().contains(QStringLiteral("2 bits")), 5000);
        QTRY_VERIFY(!preview.isEmpty() && preview.last().at(0).toBool());
        const double err2 = preview.last().at(1).toDouble();
        QVERIFY2(err2 > rep->relativeError, qPrintable(QString::number(err2)));
        QVERIFY2(preview.last().at(2).toDouble() < 0.5, qPrintable(QString::number(preview.last().at(2).toDouble())));
        // Issue 19 item 6: the preview is drawn in both error charts beside the run's (before /
        // after, legend shown); at 2 bits nearly every output channel is worse than at 4.
        QLineSeries* outAfter = tv->outChannelChart()->compareSeries();
        QTRY_COMPARE(outAfter->count(), 128);
        QCOMPARE(tv->inChannelChart()->compareSeries()->count(), 352);
        QVERIFY2(tv->outChannelChart()->chart()->title().contains(outAfter->name()),
                 qPrintable(tv->outChannelChart()->chart()->title()));
        QVERIFY2(outAfter->name().contains(QStringLiteral("2b")), qPrintable(outAfter->name()));
        int worse = 0;
        for (int i = 0; i < 128; ++i)
            worse += outAfter->at(i).y() > tv->outChannelChart()->series()->at(i).y() ? 1 : 0;
        QVERIFY2(worse > 115, qPrintable(QString::number(worse)));
        // The out-channel errors agree with the reported whole-tensor figure's order of magnitude.
        double meanAfter = 0;
        for (int i = 0; i < 128; ++i)
            meanAfter += outAfter->at(i).y() / 128.0;
        QVERIFY2(meanAfter > 0.3 * err2 && meanAfter < 3.0 * err2, qPrintable(QString::number(meanAfter)));
        f.showView(tv);
        screenshot(p, QStringLiteral("tensor"));
        screenshot(&f.w, QStringLiteral("whatif_1280x800"));

        // Apply to plan: the tensor's row takes the previewed settings in one undo step; Undo
        // (the button beside it) takes it back.
        PlanTableModel* pm = p->planEditor()->model();
        const int row = [&] {
            for (int r = 0; r < pm->rowCount(); ++r)
                if (pm->ruleName(r) == QStringLiteral("model.layers.2.mlp.down_proj")) return r;
            return -1;
        }();
        QVERIFY(row >= 0);
        QCOMPARE(bitsAt(pm, row), 4);
        const int undoBefore = pm->undoStack()->count();
        tv->groupSpin()->setValue(64);
        QTRY_VERIFY(!preview.isEmpty() && preview.last().at(0).toBool() && tv->previewSettings() &&
                    tv->previewSettings()->groupSize == 64);
        QTRY_VERIFY(tv->applyButton()->isEnabled());
        QTest::mouseClick(tv->applyButton(), Qt::LeftButton);
        QCOMPARE(pm->undoStack()->count(), undoBefore + 1);
        QCOMPARE(bitsAt(pm, row), 2);
        QCOMPARE(pm->index(row, PlanTableModel::Group).data().toInt(), 64);
        QCOMPARE(pm->resolved().tensors[std::size_t(row)].method, qb::quant::Method::Gptq);
        QCOMPARE(bitsAt(pm, row - 1), 4); // only that tensor
        QVERIFY(tv->previewLabel()->text().contains(QStringLiteral("Applied")));
        QVERIFY(tv->undoButton()->isEnabled());
        QTest::mouseClick(tv->undoButton(), Qt::LeftButton);
        QCOMPARE(bitsAt(pm, row), 4);
        QCOMPARE(pm->index(row, PlanTableModel::Group).data().toInt(), 128);
        QCOMPARE(pm->undoStack()->index(), undoBefore);

        // Run 2: 3 bits everywhere via select-all + bulk edit.
        f.showView(p->planEditor());
        PlanEditor* ed = p->planEditor();
        ed->table()->setFocus();
        QTest::keyClick(ed->table(), Qt::Key_A, Qt::ControlModifier);
        ed->bulkField()->setCurrentIndex(ed->bulkField()->findData(int(PlanTableModel::Bits)));
        ed->bulkValue()->setText(QStringLiteral("3"));
        QTest::mouseClick(ed->bulkApply(), Qt::LeftButton);
        QCOMPARE(ed->model()->resolved().tensors.back().options.grid.bits, 3);
        QTest::mouseClick(p->quantizeButton(), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        QCOMPARE(p->runs()->rowCount(), 2);
        auto run2 = p->runs()->run(1);
        QVERIFY(run2->result->bitsPerWeight < run1->result->bitsPerWeight);

        // Compare: pick both runs in the run table.
        RunCompareView* cv = p->compareView();
        f.showView(cv);
        clickCell(cv->table(), 0, 1);
        clickCell(cv->table(), 1, 1, Qt::ControlModifier);
        QCOMPARE(cv->comparedRows(), QList<int>({0, 1}));
        QCOMPARE(cv->layerChart()->series()->barSets().size(), 2);
        QCOMPARE(cv->layerChart()->plotted(0), run1->layerErrors());
        QCOMPARE(cv->layerChart()->plotted(1), run2->layerErrors());
        // The scatter: one labelled series per run, the original model's perplexity as a dashed
        // baseline, a legend naming all three.
        BpwPerplexityChart* sc = cv->scatter();
        QCOMPARE(sc->runSeries().size(), 2);
        QCOMPARE(sc->runSeries()[1]->count(), 1);
        QCOMPARE(sc->runSeries()[1]->at(0), QPointF(run2->result->bitsPerWeight, *run2->perplexity));
        QCOMPARE(sc->runSeries()[0]->pointLabelsFormat(), QStringLiteral("#%1").arg(run1->id));
        QVERIFY(sc->runSeries()[0]->pointLabelsVisible());
        QCOMPARE(sc->baselineSeries()->count(), 2);
        QCOMPARE(sc->baselineSeries()->at(0).y(), run1->kl->referencePerplexity);
        QVERIFY(run1->kl->referencePerplexity < *run1->perplexity);
        QVERIFY(sc->chart()->legend()->isVisible());
        QCOMPARE(sc->chart()->legend()->markers().size(), 3);
        QCOMPARE(sc->chart()->legend()->markers(sc->baselineSeries()).size(), 1);
        QVERIFY(sc->chart()->legend()->markers(sc->baselineSeries()).first()->label().contains("original"));
        QVERIFY2(sc->baselineSeries()->name().contains(QStringLiteral("original")),
                 qPrintable(sc->baselineSeries()->name()));
        QVERIFY2(sc->runSeries()[1]->name().contains(run2->label()), qPrintable(sc->runSeries()[1]->name()));
        QCOMPARE(p->runs()->index(1, QuantRunModel::Plan).data().toString(), run2->summary);
        QCOMPARE(run2->name, QStringLiteral("GPTQ 3b g128"));
        // The compared runs' KL figures in one line; 3 bits is further from the original than 4.
        QVERIFY(cv->klSummary()->isVisible());
        QString klLine = cv->klSummary()->text();
        QVERIFY2(klLine.contains(QStringLiteral("#%1 GPTQ 4b g128: KL").arg(run1->id)) &&
                     klLine.contains(QStringLiteral("#%1 GPTQ 3b g128: KL").arg(run2->id)) && klLine.contains("p99"),
                 qPrintable(klLine));
        QVERIFY(run2->kl && run2->kl->mean > run1->kl->mean);

        // Rename run 1 in the run table (its name cell, F2, type, Enter): the compare view,
        // the scatter's legend and the history follow; run 2 from the results header.
        clickCell(cv->table(), 0, QuantRunModel::Name);
        QTest::keyClick(cv->table(), Qt::Key_F2);
        QLineEdit* editor = nullptr;
        QTRY_VERIFY((editor = cv->table()->viewport()->findChild<QLineEdit*>()) != nullptr);
        editor->selectAll();
        QTest::keyClicks(editor, QStringLiteral("baseline 4-bit"));
        QTest::keyClick(editor, Qt::Key_Return);
        QTRY_COMPARE(p->runs()->run(0)->name, QStringLiteral("baseline 4-bit")); // the delegate commits queued
        klLine = cv->klSummary()->text();
        QVERIFY2(klLine.contains(QStringLiteral("#%1 baseline 4-bit: KL").arg(run1->id)), qPrintable(klLine));
        QVERIFY(sc->runSeries()[0]->name().contains(QStringLiteral("baseline 4-bit")));
        QVERIFY(cv->layerChart()->chart()->title().contains(QStringLiteral("baseline 4-bit")));
        QCOMPARE(history->rowCount(), 2);
        QCOMPARE(history->index(0, RunHistoryModel::Variant).data().toString(), QStringLiteral("baseline 4-bit"));
        QCOMPARE(history->index(1, RunHistoryModel::Variant).data().toString(), QStringLiteral("GPTQ 3b g128"));
        QCOMPARE(history->index(1, RunHistoryModel::Perplexity).data(Qt::EditRole).toDouble(), *run2->perplexity);
        clickCell(cv->table(), 0, QuantRunModel::Plan);
        clickCell(cv->table(), 1, QuantRunModel::Plan, Qt::ControlModifier);
        QCOMPARE(cv->comparedRows(), QList<int>({0, 1}));
        screenshot(p, QStringLiteral("compare"));
        screenshot(&f.w, QStringLiteral("compare_1280x800"));
        f.showView(p->runHeader()->parentWidget());
        QCOMPARE(p->runHeader()->runId(), run2->id);
        QLineEdit* nameEdit = p->runHeader()->nameEdit();
        QTest::mouseClick(nameEdit, Qt::LeftButton);
        nameEdit->selectAll();
        QTest::keyClicks(nameEdit, QStringLiteral("aggressive 3-bit"));
        QTest::keyClick(nameEdit, Qt::Key_Return);
        QCOMPARE(p->runs()->run(1)->name, QStringLiteral("aggressive 3-bit"));
        QCOMPARE(p->currentRun()->name, QStringLiteral("aggressive 3-bit"));
        QCOMPARE(history->index(1, RunHistoryModel::Variant).data().toString(), QStringLiteral("aggressive 3-bit"));
        QVERIFY(p->layerChart()->chart()->title().contains(QStringLiteral("aggressive 3-bit")));
        // An empty name restores the default.
        nameEdit->selectAll();
        QTest::keyClick(nameEdit, Qt::Key_Delete);
        QTest::keyClick(nameEdit, Qt::Key_Return);
        QCOMPARE(p->runs()->run(1)->name, QStringLiteral("GPTQ 3b g128"));
        QCOMPARE(nameEdit->text(), QStringLiteral("GPTQ 3b g128"));
        screenshot(&f.w, QStringLiteral("window"));

        // Cancel a longer run: back to idle, no run added.
        p->windowsSpin()->setValue(256);
        p->lengthSpin()->setValue(128);
        QTest::mouseClick(p->quantizeButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(f.w.jobStatus()->progressBar()->value() > 60, 60000);
        QVERIFY(f.w.jobStatus()->text().contains(QStringLiteral("layer")));
        QTest::mouseClick(f.w.jobStatus()->cancelButton(), Qt::LeftButton);
        QVERIFY(done.wait(60000));
        QCOMPARE(done.last().at(0).toBool(), false);
        QTRY_VERIFY(!f.w.jobStatus()->isBusy());
        QCOMPARE(p->runs()->rowCount(), 2);
        QVERIFY(p->quantizeButton()->isEnabled());
        // The cancelled run does not leave the results wiped: the last good run is back.
        QCOMPARE(p->reports()->rowCount(), 4 * 7);
    }

    // The weight-and-activation row of the plan editor: activation and KV bits from the keyboard
    // write the plan (one undo step each, the JSON follows), and a run with them lands in the run
    // list labelled with its activation settings.
    void activationSettingsRun()
    {
        Fixture f;
        QVERIFY(f.open());
        PlanEditor* ed = f.panel->planEditor();
        ActivationSettings* a = ed->activationSettings();
        QVERIFY(a && a->isVisible());
        QCOMPARE(a->activationBits()->currentData().toInt(), 0);
        QVERIFY(!ed->jsonEdit()->toPlainText().contains(QStringLiteral("activations")));
        a->activationBits()->setFocus();
        QTest::keyClick(a->activationBits(), Qt::Key_Down); // off -> 8
        QCOMPARE(ed->model()->plan().activation.spec(qb::model::LinearKind::Down).bits, 8);
        QVERIFY(ed->jsonEdit()->toPlainText().contains(QStringLiteral("\"activations\"")));
        ed->undoAction()->trigger();
        QCOMPARE(a->activationBits()->currentData().toInt(), 0);
        QVERIFY(!ed->jsonEdit()->toPlainText().contains(QStringLiteral("activations")));
        ed->redoAction()->trigger();
        QCOMPARE(a->activationBits()->currentData().toInt(), 8);
        a->kvBits()->setFocus();
        QTest::keyClick(a->kvBits(), Qt::Key_Down);
        QCOMPARE(ed->model()->plan().activation.kvBits, 8);
        QTest::mouseClick(a->smooth(), Qt::LeftButton);
        QVERIFY(ed->model()->plan().activation.smoothAlpha.has_value());
        QVERIFY(a->alpha()->isEnabled());
        // The JSON editor is the other way in: a per-group setting shows in the row's note.
        ed->jsonEdit()->setPlainText(
            QString::fromStdString(qb::io::toJsonText(qb::pipeline::quantPlanToJson(ed->model()->plan())))
                .replace(QStringLiteral("\"activations\": {"),
                         QStringLiteral("\"activations\": {\"groups\": {\"down\": {\"bits\": 6}}, ")));
        QTest::mouseClick(ed->jsonApply(), Qt::LeftButton);
        QCOMPARE(ed->model()->plan().activation.spec(qb::model::LinearKind::Down).bits, 6);
        QVERIFY2(a->note()->text().contains(QStringLiteral("per group: A6-8")), qPrintable(a->note()->text()));
        screenshot(f.panel, QStringLiteral("activations"));

        QuantizePanel* p = f.panel;
        QSignalSpy done(p, &QuantizePanel::quantizeFinished);
        QTest::mouseClick(p->quantizeButton(), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        auto run = p->runs()->run(0);
        QVERIFY2(run->summary.contains(QStringLiteral("A6-8 KV8 +smooth 0.6")), qPrintable(run->summary));
        QVERIFY(run->perplexity && std::isfinite(*run->perplexity) && *run->perplexity > 1.0);
        QVERIFY(!run->result->notes.empty());
    }

    // Issue 15 item 5: the RUQuant presets and fine-tuning epochs from the plan editor (undoable),
    // and a RUQuant run from the window, off the UI thread.
    void ruquantPresetRun()
    {
        Fixture f;
        QVERIFY(f.open());
        PlanEditor* ed = f.panel->planEditor();
        ActivationSettings* a = ed->activationSettings();
        QVERIFY(a->presets()->menu() && a->presets()->menu()->actions().size() == 3);
        QVERIFY(!a->finetuneEpochs()->isVisible());
        a->presets()->menu()->actions().at(0)->trigger(); // W4A4
        const auto& plan = ed->model()->plan();
        QCOMPARE(plan.activation.rotate, qb::pipeline::PlanRotation::Ruquant);
        QCOMPARE(plan.activation.spec(qb::model::LinearKind::Qkv).bits, 4);
        QCOMPARE(plan.activation.spec(qb::model::LinearKind::Qkv).clip, 0.9f);
        QCOMPARE(plan.activation.kvBits, 4);
        QCOMPARE(plan.defaults.clip.value_or(1.0), 0.8);
        QCOMPARE(a->rotation()->currentData().toInt(), int(qb::pipeline::PlanRotation::Ruquant));
        QVERIFY(a->finetuneEpochs()->isVisible());
        a->finetuneEpochs()->setValue(1);
        Q_EMIT a->finetuneEpochs()->editingFinished();
        QCOMPARE(ed->model()->plan().activation.ruquant.finetuneEpochs, 1);
        QVERIFY(ed->jsonEdit()->toPlainText().contains(QStringLiteral("\"finetune_epochs\": 1")));
        ed->undoAction()->trigger();
        QCOMPARE(ed->model()->plan().activation.ruquant.finetuneEpochs, 0);
        QCOMPARE(a->finetuneEpochs()->value(), 0);
        screenshot(f.panel, QStringLiteral("ruquant_preset"));

        QuantizePanel* p = f.panel;
        QSignalSpy done(p, &QuantizePanel::quantizeFinished);
        {
            EventLoopProbe probe;
            QTest::mouseClick(p->quantizeButton(), Qt::LeftButton);
            QVERIFY(done.wait(300000));
            QVERIFY2(probe.maxBusyMs() < 100, qPrintable(QString::number(probe.maxBusyMs())));
        }
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        auto run = p->runs()->run(0);
        QVERIFY2(run->summary.contains(QStringLiteral("A4 KV4 Q4 +smooth 0.6 +ruquant")), qPrintable(run->summary));
        QVERIFY(run->perplexity && std::isfinite(*run->perplexity) && *run->perplexity > 1.0);
        QVERIFY(std::any_of(run->result->notes.begin(), run->result->notes.end(),
                            [](const std::string& n) { return n.find("RUQuant (seed") != std::string::npos; }));
        QVERIFY(run->result->onlineTransforms.find("RUQuant") != std::string::npos);
    }

    // Issue 16 items 2 and 4: the sensitivity atlas in a worker (the window stays live), its heat
    // map (click -> the tensor), the budget slider and spin box writing the plan live with undo
    // (one drag = one step), the cached atlas on the second analysis, measured KL per tensor.
    void budgetPlanner()
    {
        QDir(QStandardPaths::writableLocation(QStandardPaths::CacheLocation)).removeRecursively();
        Fixture f;
        QVERIFY(f.open());
        BudgetPlanner* b = f.panel->budgetPlanner();
        QVERIFY(b);
        f.showView(b);
        QSignalSpy atlas(b, &BudgetPlanner::atlasChanged);
        {
            EventLoopProbe probe;
            QTest::mouseClick(b->analyzeButton(), Qt::LeftButton);
            QVERIFY(atlas.wait(120000));
            QVERIFY2(probe.maxBusyMs() < 50, qPrintable(QString::number(probe.maxBusyMs())));
        }
        QVERIFY(b->atlas().has_value());
        QVERIFY(!b->statusLabel()->text().contains(QStringLiteral("from the cache")));
        QTableWidget* heat = b->heatMap();
        QCOMPARE(heat->rowCount(), 4);
        QCOMPARE(heat->columnCount(), 7);
        QSet<QRgb> colours;
        for (int r = 0; r < 4; ++r)
            for (int c = 0; c < 7; ++c) {
                QTableWidgetItem* it = heat->item(r, c);
                QVERIFY(it);
                bool ok = false;
                QVERIFY(it->text().toDouble(&ok) > 0 && ok);
                colours.insert(it->background().color().rgb());
            }
        QVERIFY(colours.size() > 3); // the map tells tensors apart

        // Budget 3 bits/weight: the plan table follows, as one undo step.
        PlanTableModel* plan = f.panel->planEditor()->model();
        QUndoStack* undo = plan->undoStack();
        const double before = plan->resolved().bitsPerWeight;
        const int steps = undo->index();
        b->budgetSpin()->setValue(3.0);
        QVERIFY(b->allocation().has_value());
        QVERIFY(plan->resolved().bitsPerWeight <= 3.0 + 1e-9);
        QVERIFY(plan->resolved().bitsPerWeight > 2.7);
        QVERIFY(plan->plan().rules.size() > 0); // mixed, not uniform
        QCOMPARE(undo->index(), steps + 1);
        QVERIFY(b->allocationLabel()->text().contains(QStringLiteral("best uniform")));
        undo->undo();
        QCOMPARE(plan->resolved().bitsPerWeight, before);
        undo->redo();
        QVERIFY(plan->resolved().bitsPerWeight <= 3.0 + 1e-9);

        // A drag over the slider: many allocations, one undo step.
        QSlider* slider = b->budgetSlider();
        const int dragStart = undo->index();
        Q_EMIT slider->sliderPressed();
        slider->setSliderDown(true);
        for (int v : {200, 400, 600, 800})
            slider->setValue(v);
        slider->setSliderDown(false);
        Q_EMIT slider->sliderReleased();
        QCOMPARE(undo->index(), dragStart + 1);
        QVERIFY(plan->resolved().bitsPerWeight > 5.0);
        QVERIFY(b->paretoSeries()->count() > 28);

        // Issue 16 item 3 in the window: a tensor edited by hand after an allocation keeps its
        // setting when the budget moves (when it is a candidate); Release hands it back; a bits
        // range holds for every tensor.
        b->budgetSpin()->setValue(3.0);
        const auto& first = plan->resolved().tensors[0];
        const std::string q0 = first.name;
        const int handBits = first.options.grid.bits == 8 ? 7 : 8;
        QVERIFY(plan->setField({0}, PlanTableModel::Bits, QString::number(handBits)).isEmpty());
        QCOMPARE(plan->resolved().tensors[0].options.grid.bits, handBits);
        b->budgetSpin()->setValue(3.5);
        QCOMPARE(plan->resolved().tensors[0].options.grid.bits, handBits); // kept
        QCOMPARE(b->keptEdits().size(), std::size_t(1));
        QVERIFY(b->keptEdits().count(q0));
        QVERIFY2(b->allocationLabel()->text().contains(QStringLiteral("1 tensor(s) kept as edited by hand")),
                 qPrintable(b->allocationLabel()->text()));
        QVERIFY(plan->resolved().bitsPerWeight <= 3.5 + 1e-9);
        b->budgetSpin()->setValue(2.6);
        QCOMPARE(plan->resolved().tensors[0].options.grid.bits, handBits); // still kept at a lower budget
        QTest::mouseClick(b->releaseEditsButton(), Qt::LeftButton);
        QVERIFY(b->keptEdits().empty());
        QVERIFY(plan->resolved().tensors[0].options.grid.bits < handBits); // the allocator's choice again
        // Bits from 3 to 4: every quantized tensor within.
        b->minBitsSpin()->setValue(3);
        b->maxBitsSpin()->setValue(4);
        b->budgetSpin()->setValue(3.4);
        for (const auto& t : plan->resolved().tensors)
            QVERIFY2(t.skip || (t.options.grid.bits >= 3 && t.options.grid.bits <= 4), t.name.c_str());
        // Per kind: down_proj from 6 bits, the others back to every range.
        b->minBitsSpin()->setValue(1);
        b->maxBitsSpin()->setValue(16);
        b->rangeKindCombo()->setCurrentIndex(b->rangeKindCombo()->findText(QStringLiteral("down")));
        QCOMPARE(b->minBitsSpin()->value(), 1);
        b->minBitsSpin()->setValue(6);
        b->budgetSpin()->setValue(3.6);
        for (const auto& t : plan->resolved().tensors)
            if (t.linear == qb::model::Linear::Down) QVERIFY2(t.skip || t.options.grid.bits >= 6, t.name.c_str());
        QVERIFY(plan->resolved().bitsPerWeight <= 3.6 + 1e-9);
        b->minBitsSpin()->setValue(1);
        b->rangeKindCombo()->setCurrentIndex(0);

        // Click the hottest cell at this candidate: the tensor view shows that tensor.
        QTest::mouseClick(heat->viewport(), Qt::LeftButton, {}, heat->visualItemRect(heat->item(0, 6)).center());
        QCOMPARE(f.panel->views()->currentWidget(), f.panel->tensorView());
        f.showView(b);
        screenshot(f.panel, QStringLiteral("budget"));

        // Again: from the cache, at once.
        atlas.clear();
        QTest::mouseClick(b->analyzeButton(), Qt::LeftButton);
        QVERIFY(atlas.wait(60000));
        QVERIFY2(b->statusLabel()->text().contains(QStringLiteral("from the cache")),
                 qPrintable(b->statusLabel()->text()));

        // Measure three tensors: the damage becomes nats, with a rank correlation.
        atlas.clear();
        b->findChild<QSpinBox*>(QStringLiteral("budgetMeasureCount"))->setValue(3);
        QTest::mouseClick(b->measureButton(), Qt::LeftButton);
        QVERIFY(atlas.wait(180000));
        QCOMPARE(b->atlas()->measured.size(), std::size_t(3));
        // Proxy and measured KL side by side, with their ranks.
        QTableWidget* side = b->measuredTable();
        QVERIFY(side->isVisible());
        QCOMPARE(side->rowCount(), 3);
        for (int r = 0; r < 3; ++r) {
            const auto& m = b->atlas()->measured[std::size_t(r)];
            QCOMPARE(side->item(r, 3)->text(), QString::number(m.klMean, 'g', 3));
            QCOMPARE(side->item(r, 2)->text(),
                     QString::number(b->atlas()->cells[m.tensor][m.candidate].proxyLoss, 'g', 3));
        }
        QVERIFY2(b->statusLabel()->text().contains(QStringLiteral("Rank correlation")),
                 qPrintable(b->statusLabel()->text()));
    }
};

QTEST_MAIN(TestQuantizePanel)
#include "tst_quantize_panel.moc"
