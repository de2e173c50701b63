#pragma once
// LossCurveChart: the training loss of a distillation per optimizer step (a line), with the
// learning rate of each step on a second axis (dashed; the warm-up and cosine schedule) and the
// loss over every calibration window before training as a horizontal reference once known.
// Every refresh is one QXYSeries::replace() per series; GUI thread only.

#include <QChartView>

class QLineSeries;
class QValueAxis;

namespace qb::ui {

class LossCurveChart : public QChartView {
    Q_OBJECT
public:
    explicit LossCurveChart(QWidget* parent = nullptr);

    // The curve so far: loss[i] and lr[i] of step i (1-based on the axis), out of `steps`; the
    // step axis grows with the curve up to `steps`. `what` goes into the title (loss, run).
    void setCurve(const QList<double>& loss, const QList<double>& lr, int steps, const QString& what);
    // The loss over every window before training (NaN: none shown).
    void setBaseline(double lossBefore);
    void clear();

    QLineSeries* lossSeries() const { return m_loss; }
    QLineSeries* lrSeries() const { return m_lr; }

private:
    void updateRanges();

    QLineSeries* m_loss;
    QLineSeries* m_lr;
    QLineSeries* m_baseline;
    QValueAxis* m_x;
    QValueAxis* m_y;
    QValueAxis* m_yLr;
    int m_steps = 1;
    double m_before;
};

} // namespace qb::ui
