#pragma once
// The header column chooser of the explorer and the plan table: right-click the header for a
// checkable list of columns 1.. (column 0, the name, always shows); the titles of the hidden ones
// are remembered in QSettings under a key of the view's own.

#include <QString>
#include <QStringList>

class QHeaderView;

namespace qb::ui {

// Hides the columns remembered under `settingsKey` (`defaultHidden` when nothing is) and installs
// the context menu (object name `menuName`) on `header`, whose model must be set.
void installColumnChooser(QHeaderView* header, const QString& settingsKey, const QStringList& defaultHidden,
                          const QString& menuName);
// Shows or hides one column and remembers the header's hidden columns under `settingsKey`.
void setChooserColumnShown(QHeaderView* header, const QString& settingsKey, int column, bool shown);

} // namespace qb::ui
