#pragma once
// The window's side of crash-safe quantize runs (pipeline/quantize_checkpoint.h): every run
// started in the window writes its per-layer checkpoint under the cache location
// (QStandardPaths::CacheLocation/quantize-checkpoints/<model>/<request>, one directory per model
// and, inside it, one per plan + calibration + importance matrix), so that after a crash or a kill
// starting the same run again finds it and asks whether to resume. Under QStandardPaths' test
// mode the directories are per process, so that a GUI test killed mid-run never makes the next
// run of the test ask.
// The checks here are cheap (a directory name from a hash, one small JSON file) and run on the
// GUI thread; loading the checkpoint happens in the quantize job on the worker. The question is
// window-modal and asynchronous (QMessageBox::open, no nested event loop).
// Threading: GUI thread, except pruneQuantizeCheckpointDirs (any thread).

#include "io/checkpoint.h"
#include "pipeline/workflows.h"

#include <QString>

#include <functional>
#include <optional>

class QWidget;

namespace qb::ui {

// The checkpoint directory of `request` (its model, plan, calibration) and an importance matrix.
QString quantizeCheckpointDir(const io::Checkpoint& model, const pipeline::QuantizeRequest& request,
                              const QString& imatrixPath);

// An interrupted run's progress in `dir`: {layers done, layers in all}; nullopt when there is none.
// An unreadable manifest counts as one (the job then says what is wrong with it).
std::optional<std::pair<int, int>> interruptedQuantizeRun(const QString& dir);

// Removes the empty directories a finished run's removed checkpoint leaves above it, up to the
// cache location (file operations only: callable from the worker).
void pruneQuantizeCheckpointDirs(const QString& dir);

enum class ResumeAnswer { Resume, StartOver, Cancel };

// Asks whether to resume an interrupted run (done of layers checkpointed); `answer` runs on the
// GUI thread once the user chose. The box's object name is "resumeQuantizeBox" (tests).
void askResumeQuantize(QWidget* parent, int done, int layers, std::function<void(ResumeAnswer)> answer);

} // namespace qb::ui
