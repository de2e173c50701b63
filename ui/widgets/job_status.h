#pragma once
// JobStatus: the status-bar strip for the running job: what it is doing, a progress bar, an
// ETA and a Cancel button. It observes a QFutureWatcherBase, so it works for any job type.

#include <QElapsedTimer>
#include <QPointer>
#include <QWidget>

class QFutureWatcherBase;
class QLabel;
class QProgressBar;
class QPushButton;

namespace qb::ui {

class JobStatus : public QWidget {
    Q_OBJECT
public:
    explicit JobStatus(QWidget* parent = nullptr);

    // Shows the strip for `watcher` (not owned) until it finishes.
    void watch(QFutureWatcherBase* watcher, const QString& title);
    bool isBusy() const;
    QPushButton* cancelButton() const { return m_cancel; }
    QProgressBar* progressBar() const { return m_bar; }
    QString text() const;

private:
    void updateEta();

    QLabel* m_label;
    QProgressBar* m_bar;
    QPushButton* m_cancel;
    QPointer<QFutureWatcherBase> m_watcher;
    QString m_title;
    QElapsedTimer m_clock;
};

} // namespace qb::ui
