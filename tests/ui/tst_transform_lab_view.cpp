// The Transform lab tab, driven with real clicks offscreen on a copy of the demo model with planted
// outlier channels (layer 0: three input_layernorm gains x 30, the matching q/k/v columns / 30,
// the same function): the explorer points the lab at an input, Run fills one column per stage
// (histograms on one value axis) and the summary table, the original stage shows the outliers and
// smoothing removes most of the 4-bit output error; the metric switch redraws with one y range;
// cancel returns to idle; the event loop is never blocked. Saves transform_lab.png (1280x800).
// With RUQuant checked: RUQuant's four stages after the standard ones, the within-cell view for the
// chosen channel, recomputed off the GUI thread when the channel changes. Saves
// transform_lab_ruquant.png (within-cell positions) and transform_lab_offsets.png (1280x800).

#include "charts/histogram_chart.h"
#include "event_loop_probe.h"
#include "export/safetensors_export.h"
#include "models/lab_summary_model.h"
#include "widgets/activations_panel.h"
#include "widgets/job_status.h"
#include "widgets/lab_cell_view.h"
#include "widgets/main_window.h"
#include "widgets/model_explorer.h"
#include "widgets/transform_lab.h"

#include <QAbstractItemModelTester>
#include <QAbstractAxis>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFile>
#include <QLineSeries>
#include <QPushButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTabBar>
#include <QTabWidget>
#include <QTableView>
#include <QTemporaryDir>
#include <QTest>
#include <QValueAxis>

#include <cmath>
#include <cstring>
#include <memory>

using namespace qb;
using namespace qb::ui;

namespace {

// The demo model with planted outliers, written as a model directory under `dir`.
bool writeOutlierDemo(const QString& dir, QString* error)
{
    const QString demo = QStringLiteral(QB_DEMO_DIR);
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "calib.txt"})
        if (!QFile::copy(demo + QLatin1Char('/') + QLatin1String(f), dir + QLatin1Char('/') + QLatin1String(f))) {
            *error = QStringLiteral("cannot copy %1").arg(QLatin1String(f));
            return false;
        }
    auto ck = io::openCheckpoint(demo.toStdString());
    if (!ck) return false;
    const std::int64_t outliers[] = {5, 40, 77};
    std::vector<exporting::SafetensorsTensor> tensors;
    for (const TensorInfo& t : ck->tensors) {
        std::vector<float> v(std::size_t(t.numel()));
        if (!io::readTensorF32(t, v.data())) return false;
        if (t.name == "model.layers.0.input_layernorm.weight")
            for (auto j : outliers)
                v[std::size_t(j)] *= 30.f;
        for (const char* p : {"q_proj", "k_proj", "v_proj"})
            if (t.name == std::string("model.layers.0.self_attn.") + p + ".weight")
                for (std::int64_t r = 0; r < t.shape[0]; ++r)
                    for (auto j : outliers)
                        v[std::size_t(r * t.shape[1] + j)] /= 30.f;
        std::vector<std::uint8_t> bytes(v.size() * sizeof(float));
        std::memcpy(bytes.data(), v.data(), bytes.size());
        tensors.push_back(exporting::safetensorsTensorFromBytes(t.name, DType::F32, t.shape, std::move(bytes)));
    }
    auto w = exporting::writeSafetensorsFile((dir + QStringLiteral("/model.safetensors")).toStdString(), tensors);
    if (!w) *error = QString::fromStdString(w.error().toString());
    return w.ok();
}

void saveScreenshot(QWidget& w, const QString& name)
{
    QString dir = qEnvironmentVariable("QB_SCREENSHOT_DIR");
    if (dir.isEmpty()) dir = QStringLiteral(QB_BINARY_DIR "/screenshots");
    QDir().mkpath(dir);
    QVERIFY(w.grab().save(dir + QLatin1Char('/') + name));
}

double cell(const QAbstractItemModel* m, int row, int col) { return m->index(row, col).data(Qt::EditRole).toDouble(); }

// Counts the resize events of the widgets it filters (a layout pass that moved them).
class ResizeCounter : public QObject {
public:
    int count = 0;
    bool eventFilter(QObject* o, QEvent* e) override
    {
        if (e->type() == QEvent::Resize) ++count;
        return QObject::eventFilter(o, e);
    }
};

} // namespace

class TestTransformLabView : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;

private Q_SLOTS:
    void initTestCase()
    {
        QStandardPaths::setTestModeEnabled(true);
        QString err;
        QVERIFY2(writeOutlierDemo(m_dir.path(), &err), qPrintable(err));
    }

    void labFillsColumnsAndTableWithoutBlocking()
    {
        MainWindow w;
        w.resize(1280, 800);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(m_dir.path());
        QVERIFY(loaded.wait(20000));
        // The calibration setting is the workbench's one (set in the Activations tab).
        w.activationsPanel()->windowsSpin()->setValue(16);
        w.activationsPanel()->lengthSpin()->setValue(128);
        TransformLab* lab = w.transformLab();
        QVERIFY(lab);
        w.viewTabs()->setCurrentWidget(lab);
        QCOMPARE(lab->layerSpin()->maximum(), 3);
        QVERIFY2(lab->minimumSizeHint().width() < 700, "the tab must not widen the window");
        QVERIFY(lab->runButton()->isEnabled());

        // The explorer points the lab at the selected weight's input.
        QVERIFY(w.explorer()->selectTensor(QStringLiteral("model.layers.2.mlp.down_proj.weight")));
        QCOMPARE(lab->layerSpin()->value(), 2);
        QCOMPARE(lab->inputCombo()->currentData().toInt(), int(model::LinearKind::Down));
        QVERIFY(w.explorer()->selectTensor(QStringLiteral("model.layers.0.self_attn.k_proj.weight")));
        QCOMPARE(lab->layerSpin()->value(), 0);
        QCOMPARE(lab->inputCombo()->currentData().toInt(), int(model::LinearKind::Qkv));
        QCOMPARE(lab->bitsCombo()->currentData().toInt(), 4);
        QCOMPARE(lab->weightBitsCombo()->currentData().toInt(), 0);

        QAbstractItemModelTester tester(lab->summaryModel(), QAbstractItemModelTester::FailureReportingMode::QtTest);
        QSignalSpy done(lab, &TransformLab::labFinished);
        qbtest::EventLoopProbe probe;
        QTest::mouseClick(lab->runButton(), Qt::LeftButton);
        QVERIFY(w.jobStatus()->isBusy());
        QVERIFY(!lab->runButton()->isEnabled());
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        qInfo("transform lab: event loop blocked at most %.1f ms", probe.maxBusyMs());
        QVERIFY2(probe.maxBusyMs() < 50.0, qPrintable(QString::number(probe.maxBusyMs())));
        QVERIFY(lab->runButton()->isEnabled());

        const auto r = lab->result();
        QVERIFY(r);
        QCOMPARE(r->totalTokens, std::int64_t(16 * 128));
        const int stages = int(r->stages.size());
        QCOMPARE(stages, 4); // original, smoothed, Hadamard, smoothed + Hadamard
        const QAbstractItemModel* m = lab->summaryModel();
        QCOMPARE(m->rowCount(), stages);
        QCOMPARE(m->index(0, LabSummaryModel::Stage).data().toString(), QStringLiteral("original"));
        QVERIFY(m->index(1, LabSummaryModel::Stage).data().toString().startsWith(QStringLiteral("smoothed")));
        for (int row = 0; row < stages; ++row)
            qInfo("  %-28s max/median %7.2f  kurtosis %7.2f  token kurtosis %7.2f  A4 output error %.4f",
                  qPrintable(m->index(row, LabSummaryModel::Stage).data().toString()),
                  cell(m, row, LabSummaryModel::ChannelRatio), cell(m, row, LabSummaryModel::Kurtosis),
                  cell(m, row, LabSummaryModel::TokenKurtosis), cell(m, row, LabSummaryModel::OutputError));
        QVERIFY(cell(m, 0, LabSummaryModel::ChannelRatio) > 20);
        QVERIFY(cell(m, 1, LabSummaryModel::ChannelRatio) < cell(m, 0, LabSummaryModel::ChannelRatio) / 4);
        QVERIFY(cell(m, 1, LabSummaryModel::OutputError) < 0.5 * cell(m, 0, LabSummaryModel::OutputError));
        QCOMPARE(m->index(2, LabSummaryModel::Stage).data().toString(), QStringLiteral("Hadamard"));
        QVERIFY(m->index(2, LabSummaryModel::Transform).data().toString().contains(QStringLiteral("Hadamard 128")));
        QVERIFY(cell(m, 2, LabSummaryModel::ChannelRatio) < cell(m, 0, LabSummaryModel::ChannelRatio) / 4);
        QVERIFY(cell(m, 2, LabSummaryModel::OutputError) < cell(m, 0, LabSummaryModel::OutputError));
        QVERIFY(cell(m, 3, LabSummaryModel::OutputError) < 0.5 * cell(m, 0, LabSummaryModel::OutputError));
        QVERIFY(r->notes.empty());

        // One column per stage; every histogram on the same value axis.
        QCOMPARE(int(lab->histograms().size()), stages);
        QCOMPARE(int(lab->channelCharts().size()), stages);
        for (HistogramChart* h : lab->histograms()) {
            auto* x = qobject_cast<QValueAxis*>(h->chart()->axes(Qt::Horizontal).first());
            QVERIFY(x);
            QCOMPARE(x->min(), r->histLo);
            QCOMPARE(x->max(), r->histHi);
            QVERIFY(h->placeholder().isEmpty());
            QVERIFY(h->isVisible());
            QTRY_VERIFY(h->height() >= 130);
        }
        QVERIFY(lab->titleText().contains(QStringLiteral("Layer 0 qkv input: 128 channels")));
        // The metric switch redraws every column with one y range.
        lab->metricCombo()->setCurrentIndex(int(TransformLab::Metric::QuantError));
        double top = -1;
        for (ChannelChart* c : lab->channelCharts()) {
            QCOMPARE(c->series()->count(), 128);
            auto* y = qobject_cast<QValueAxis*>(c->chart()->axes(Qt::Vertical).first());
            if (top < 0) top = y->max();
            QCOMPARE(y->max(), top);
        }
        QCOMPARE(lab->channelCharts().front()->series()->at(5).y(), double(r->stages[0].channelQuantError[5]));
        lab->metricCombo()->setCurrentIndex(int(TransformLab::Metric::MaxAbs));
        QTRY_VERIFY(!w.jobStatus()->isVisible());
        // The layout settles: the charts take the height the table leaves.
        QTRY_VERIFY(lab->bottomTabs()->geometry().bottom() > lab->height() - 30);
        for (HistogramChart* h : lab->histograms()) // equal columns
            QTRY_VERIFY(std::abs(h->width() - lab->histograms().front()->width()) <= 2);
        saveScreenshot(w, QStringLiteral("transform_lab.png"));
    }

    void ruquantStagesAndWithinCellView()
    {
        MainWindow w;
        w.resize(1280, 800);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(m_dir.path());
        QVERIFY(loaded.wait(20000));
        w.activationsPanel()->windowsSpin()->setValue(16);
        w.activationsPanel()->lengthSpin()->setValue(128);
        TransformLab* lab = w.transformLab();
        w.viewTabs()->setCurrentWidget(lab);
        LabCellView* cells = lab->cellView();
        QVERIFY(cells);
        QVERIFY(!lab->ruquantCheck()->isChecked());
        QTest::mouseClick(lab->ruquantCheck(), Qt::LeftButton);
        QVERIFY(lab->ruquantCheck()->isChecked());
        cells->channelSpin()->setValue(0); // no result yet: nothing is computed
        QSignalSpy done(lab, &TransformLab::labFinished);
        auto probe = std::make_unique<qbtest::EventLoopProbe>();
        QTest::mouseClick(lab->runButton(), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        qInfo("ruquant lab: event loop blocked at most %.1f ms", probe->maxBusyMs());
        QVERIFY2(probe->maxBusyMs() < 50.0, qPrintable(QString::number(probe->maxBusyMs())));
        const auto r = lab->result();
        QVERIFY(r);
        const QStringList want = {"original",
                                  "smoothed (α 0.6)",
                                  "Hadamard",
                                  "smoothed (α 0.6) + Hadamard",
                                  "RUQuant stage 1",
                                  "RUQuant zig-zag",
                                  "RUQuant stage 1 again",
                                  "RUQuant global Householder"};
        QCOMPARE(int(r->stages.size()), int(want.size()));
        const QAbstractItemModel* m = lab->summaryModel();
        for (int i = 0; i < want.size(); ++i) {
            QCOMPARE(m->index(i, LabSummaryModel::Stage).data().toString(), want.at(i));
            QVERIFY(cell(m, i, LabSummaryModel::CellRatio) >= 1.0);
            qInfo("  %-28s A4 output error %.4f  cell MSE ratio %.4f", qPrintable(want.at(i)),
                  cell(m, i, LabSummaryModel::OutputError), cell(m, i, LabSummaryModel::CellRatio));
        }
        QVERIFY(m->index(7, LabSummaryModel::Transform).data().toString().contains("global Householder"));
        QVERIFY(cell(m, 7, LabSummaryModel::OutputError) < 0.5 * cell(m, 0, LabSummaryModel::OutputError));
        QCOMPARE(int(lab->histograms().size()), 8);

        // The within-cell view holds the lab's channel (0) for every stage.
        QCOMPARE(r->cellChannel, 0);
        QCOMPARE(int(cells->stats().size()), 8);
        QCOMPARE(int(cells->positionCharts().size()), 8);
        for (const auto& st : cells->stats()) {
            QCOMPARE(st.channel, 0);
            QCOMPARE(st.values + st.clipped + st.exact, r->sampledTokens);
        }
        QVERIFY(cells->summaryText().contains(QStringLiteral("Channel 0")));
        lab->bottomTabs()->setCurrentWidget(cells);
        QTest::mouseClick(lab->bottomTabs()->tabBar(), Qt::LeftButton, {},
                          lab->bottomTabs()->tabBar()->tabRect(1).center());
        QCOMPARE(lab->bottomTabs()->currentWidget(), cells);

        // Another channel: recomputed through the job path, the event loop never blocked, and no
        // chart laid out again. (The summary's row changed height between "Computing channel 40
        // …" and the result: every chart of the lab was resized and repainted, twice, 15-65 ms.)
        QApplication::processEvents();
        ResizeCounter resizes;
        for (auto* v : cells->positionCharts())
            v->installEventFilter(&resizes);
        QSignalSpy updated(cells, &LabCellView::cellsUpdated);
        probe = std::make_unique<qbtest::EventLoopProbe>();
        cells->channelSpin()->setValue(40);
        QVERIFY(updated.wait(60000));
        QVERIFY2(updated.last().at(0).toBool(), qPrintable(updated.last().at(1).toString()));
        qInfo("within-cell channel switch: event loop blocked at most %.1f ms", probe->maxBusyMs());
        QVERIFY2(probe->maxBusyMs() < 50.0, qPrintable(QString::number(probe->maxBusyMs())));
        QApplication::processEvents();
        QCOMPARE(resizes.count, 0);
        for (auto* v : cells->positionCharts())
            v->removeEventFilter(&resizes);
        QCOMPARE(int(cells->stats().size()), 8);
        auto direct = pipeline::labWithinCell(*r, 40);
        QVERIFY(direct.ok());
        for (std::size_t i = 0; i < 8; ++i) {
            QCOMPARE(cells->stats()[i].channel, 40);
            QVERIFY(cells->stats()[i].positions == (*direct)[i].positions);
        }
        QVERIFY(cells->summaryText().contains(QStringLiteral("Channel 40")));
        QTRY_VERIFY(!w.jobStatus()->isVisible());
        for (HistogramChart* h : cells->positionCharts()) {
            QVERIFY(h->isVisible());
            QTRY_VERIFY(h->height() >= 100);
        }
        QTRY_VERIFY(lab->bottomTabs()->geometry().bottom() > lab->height() - 30);
        saveScreenshot(w, QStringLiteral("transform_lab_ruquant.png"));
        cells->showCombo()->setCurrentIndex(int(LabCellView::Show::Offsets));
        QCOMPARE(int(cells->offsetCharts().size()), 8);
        QVERIFY(cells->positionCharts().empty());
        for (ChannelChart* c : cells->offsetCharts())
            QTRY_VERIFY(c->isVisible());
        int occupied = 0; // one point per level holding values
        for (auto n : cells->stats().front().cellCount)
            occupied += n > 0;
        QCOMPARE(cells->offsetCharts().front()->series()->count(), occupied);
        saveScreenshot(w, QStringLiteral("transform_lab_offsets.png"));

        // A channel of a wider input (down: 352) is clamped when the lab runs on a narrower one.
        lab->inputCombo()->setCurrentIndex(lab->inputCombo()->findData(int(model::LinearKind::Down)));
        QTest::mouseClick(lab->runButton(), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        QCOMPARE(cells->channelSpin()->maximum(), 351);
        cells->channelSpin()->setValue(300);
        QVERIFY(updated.wait(60000));
        QCOMPARE(cells->stats().front().channel, 300);
        lab->inputCombo()->setCurrentIndex(lab->inputCombo()->findData(int(model::LinearKind::Qkv)));
        QTest::mouseClick(lab->runButton(), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        QCOMPARE(lab->result()->cellChannel, 127);
        QCOMPARE(cells->channelSpin()->value(), 127);
        QCOMPARE(cells->stats().front().channel, 127);
    }

    void cancelReturnsToIdle()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(m_dir.path());
        QVERIFY(loaded.wait(20000));
        w.activationsPanel()->windowsSpin()->setValue(256);
        w.activationsPanel()->lengthSpin()->setValue(256);
        TransformLab* lab = w.transformLab();
        w.viewTabs()->setCurrentWidget(lab);
        lab->layerSpin()->setValue(3);
        QSignalSpy done(lab, &TransformLab::labFinished);
        QTest::mouseClick(lab->runButton(), Qt::LeftButton);
        QVERIFY(w.jobStatus()->isBusy());
        QTest::mouseClick(w.jobStatus()->cancelButton(), Qt::LeftButton);
        QVERIFY(done.wait(60000));
        QVERIFY(!done.last().at(0).toBool());
        QCOMPARE(done.last().at(1).toString(), QStringLiteral("cancelled"));
        QVERIFY(lab->runButton()->isEnabled());
        QVERIFY(!lab->result());
        QCOMPARE(lab->summaryModel()->rowCount(), 0);
    }
};

QTEST_MAIN(TestTransformLabView)
#include "tst_transform_lab_view.moc"
