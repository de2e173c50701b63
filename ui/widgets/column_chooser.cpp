#include "widgets/column_chooser.h"

#include <QAbstractItemModel>
#include <QAction>
#include <QHeaderView>
#include <QMenu>
#include <QSettings>

namespace qb::ui {

namespace {
QString titleOf(const QHeaderView* header, int column)
{
    return header->model()->headerData(column, header->orientation()).toString();
}
} // namespace

void installColumnChooser(QHeaderView* header, const QString& settingsKey, const QStringList& defaultHidden,
                          const QString& menuName)
{
    header->setContextMenuPolicy(Qt::CustomContextMenu);
    const QStringList hidden = QSettings().value(settingsKey, defaultHidden).toStringList();
    const int columns = header->model()->columnCount();
    for (int c = 1; c < columns; ++c)
        header->setSectionHidden(c, hidden.contains(titleOf(header, c)));
    QObject::connect(header, &QWidget::customContextMenuRequested, header,
                     [header, settingsKey, menuName](const QPoint& pos) {
                         auto* menu = new QMenu(header);
                         menu->setObjectName(menuName);
                         menu->setAttribute(Qt::WA_DeleteOnClose);
                         for (int c = 1; c < header->model()->columnCount(); ++c) {
                             QAction* a = menu->addAction(titleOf(header, c));
                             a->setCheckable(true);
                             a->setChecked(!header->isSectionHidden(c));
                             QObject::connect(a, &QAction::toggled, header, [header, settingsKey, c](bool on) {
                                 setChooserColumnShown(header, settingsKey, c, on);
                             });
                         }
                         menu->popup(header->mapToGlobal(pos));
                     });
}

void setChooserColumnShown(QHeaderView* header, const QString& settingsKey, int column, bool shown)
{
    header->setSectionHidden(column, !shown);
    QStringList hidden;
    for (int c = 1; c < header->model()->columnCount(); ++c)
        if (header->isSectionHidden(c)) hidden << titleOf(header, c);
    QSettings().setValue(settingsKey, hidden);
}

} // namespace qb::ui
