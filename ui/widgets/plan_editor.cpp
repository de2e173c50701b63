#include "widgets/plan_editor.h"

#include "widgets/column_chooser.h"
#include "io/json_value.h"
#include "models/plan_table_model.h"
#include "pipeline/quant_plan.h"
#include "widgets/activation_settings.h"
#include "widgets/message_label.h"

#include <QAction>
#include <QComboBox>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSplitter>
#include <QMenu>
#include <QSettings>
#include <QStyledItemDelegate>
#include <QDoubleSpinBox>
#include <QTableView>
#include <QToolButton>
#include <QUndoStack>
#include <QVBoxLayout>

namespace qb::ui {

namespace {

// Method cells edit with a combo built from the traits table, so new methods appear here;
// Target cells with the storage targets.
class MethodDelegate : public QStyledItemDelegate {
public:
    using QStyledItemDelegate::QStyledItemDelegate;
    QWidget* createEditor(QWidget* parent, const QStyleOptionViewItem& option, const QModelIndex& index) const override
    {
        if (index.column() == PlanTableModel::Target) {
            auto* combo = new QComboBox(parent);
            combo->setObjectName(QStringLiteral("targetEditor"));
            for (const QString& t : planTargetChoices())
                combo->addItem(t, t);
            return combo;
        }
        if (index.column() == PlanTableModel::Bits && index.data(Qt::EditRole).typeId() == QMetaType::Double) {
            // A method with fractional bits (cmpq): its average, in quarter-bit steps by the arrows.
            auto* spin = new QDoubleSpinBox(parent);
            spin->setObjectName(QStringLiteral("avgBitsEditor"));
            spin->setRange(1.0, 8.0);
            spin->setDecimals(3);
            spin->setSingleStep(0.25);
            return spin;
        }
        if (index.column() != PlanTableModel::Method) return QStyledItemDelegate::createEditor(parent, option, index);
        auto* combo = new QComboBox(parent);
        combo->setObjectName(QStringLiteral("methodEditor"));
        for (const auto& t : quant::allMethodTraits())
            combo->addItem(QString::fromLatin1(t.name.data(), qsizetype(t.name.size())),
                           QString::fromLatin1(t.id.data(), qsizetype(t.id.size())));
        return combo;
    }
    void setEditorData(QWidget* editor, const QModelIndex& index) const override
    {
        if (auto* combo = qobject_cast<QComboBox*>(editor))
            combo->setCurrentIndex(combo->findData(index.data(Qt::EditRole)));
        else QStyledItemDelegate::setEditorData(editor, index);
    }
    void setModelData(QWidget* editor, QAbstractItemModel* model, const QModelIndex& index) const override
    {
        if (auto* combo = qobject_cast<QComboBox*>(editor)) model->setData(index, combo->currentData());
        else QStyledItemDelegate::setModelData(editor, model, index);
    }
};

} // namespace

PlanEditor::PlanEditor(QWidget* parent)
    : QWidget(parent), m_undo(new QUndoStack(this)), m_model(new PlanTableModel(m_undo, this)), m_table(new QTableView),
      m_bulkField(new QComboBox), m_bulkValue(new QLineEdit), m_bulkApply(new QPushButton(tr("Apply to selected"))),
      m_json(new QPlainTextEdit), m_jsonApply(new QPushButton(tr("Apply JSON"))), m_message(new QLabel),
      m_totals(new QLabel)
{
    setObjectName(QStringLiteral("planEditor"));
    m_table->setObjectName(QStringLiteral("planTable"));
    m_bulkField->setObjectName(QStringLiteral("bulkField"));
    m_bulkValue->setObjectName(QStringLiteral("bulkValue"));
    m_bulkApply->setObjectName(QStringLiteral("bulkApply"));
    m_json->setObjectName(QStringLiteral("planJson"));
    m_jsonApply->setObjectName(QStringLiteral("planJsonApply"));
    m_message->setObjectName(QStringLiteral("planMessage"));
    m_totals->setObjectName(QStringLiteral("planTotals"));

    m_table->setModel(m_model);
    // Tab leaves the table (arrow keys move between cells): no keyboard trap.
    m_table->setTabKeyNavigation(false);
    m_table->setItemDelegate(new MethodDelegate(m_table));
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_table->setEditTriggers(QAbstractItemView::DoubleClicked | QAbstractItemView::EditKeyPressed |
                             QAbstractItemView::SelectedClicked);
    m_table->verticalHeader()->hide();
    m_table->verticalHeader()->setDefaultSectionSize(22);
    // Fits Tensor..Bits/weight without horizontal scrolling at 1280x800 (the JSON pane beside).
    m_table->setColumnWidth(PlanTableModel::Tensor, 172);
    m_table->setColumnWidth(PlanTableModel::Method, 60);
    m_table->setColumnWidth(PlanTableModel::Target, 52);
    m_table->setColumnWidth(PlanTableModel::Bits, 36);
    m_table->setColumnWidth(PlanTableModel::Group, 46);
    for (int c : {PlanTableModel::Sym, PlanTableModel::Skip})
        m_table->setColumnWidth(c, 38);
    m_table->setColumnWidth(PlanTableModel::ActOrder, 70);
    m_table->setColumnWidth(PlanTableModel::Damping, 64);
    m_table->horizontalHeader()->setStretchLastSection(true);
    // Column chooser (right-click the header): GPTQ's act-order and damping are editable like the
    // other options but hidden by default, so the table fits 1280x800 without scrolling; the
    // choice is remembered (QSettings "planEditor/hiddenColumns").
    installColumnChooser(m_table->horizontalHeader(), QStringLiteral("planEditor/hiddenColumns"),
                         {QStringLiteral("Act-order"), QStringLiteral("Damping")}, QStringLiteral("planColumnsMenu"));

    for (int c : {PlanTableModel::Method, PlanTableModel::Target, PlanTableModel::Bits, PlanTableModel::Group,
                  PlanTableModel::Sym, PlanTableModel::Skip, PlanTableModel::ActOrder, PlanTableModel::Damping})
        m_bulkField->addItem(m_model->headerData(c, Qt::Horizontal).toString(), c);
    m_bulkValue->setPlaceholderText(tr("value: gptq, Q4_K, 3, 64, true..."));

    // Own actions (fixed text, the step in the tooltip) so the buttons keep their width.
    m_undoAction = new QAction(tr("Undo"), this);
    m_redoAction = new QAction(tr("Redo"), this);
    m_undoAction->setEnabled(false);
    m_redoAction->setEnabled(false);
    connect(m_undoAction, &QAction::triggered, m_undo, &QUndoStack::undo);
    connect(m_redoAction, &QAction::triggered, m_undo, &QUndoStack::redo);
    connect(m_undo, &QUndoStack::canUndoChanged, m_undoAction, &QAction::setEnabled);
    connect(m_undo, &QUndoStack::canRedoChanged, m_redoAction, &QAction::setEnabled);
    // The actions, not `this`: the undo stack (a child) emits these while the editor is being
    // destroyed (found by UBSan: member access on a half-destroyed PlanEditor).
    connect(m_undo, &QUndoStack::undoTextChanged, m_undoAction,
            [a = m_undoAction](const QString& t) { a->setToolTip(tr("Undo %1 (Ctrl+Z)").arg(t)); });
    connect(m_undo, &QUndoStack::redoTextChanged, m_redoAction,
            [a = m_redoAction](const QString& t) { a->setToolTip(tr("Redo %1 (Ctrl+Shift+Z)").arg(t)); });
    m_undoAction->setObjectName(QStringLiteral("planUndo"));
    m_undoAction->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Z));
    m_undoAction->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    m_redoAction->setObjectName(QStringLiteral("planRedo"));
    m_redoAction->setShortcuts({QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_Z), QKeySequence(Qt::CTRL | Qt::Key_Y)});
    m_redoAction->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    addAction(m_undoAction);
    addAction(m_redoAction);

    auto* undoBtn = new QToolButton;
    undoBtn->setDefaultAction(m_undoAction);
    auto* redoBtn = new QToolButton;
    redoBtn->setDefaultAction(m_redoAction);
    auto* load = new QPushButton(tr("Load plan..."));
    load->setObjectName(QStringLiteral("planLoad"));
    auto* save = new QPushButton(tr("Save plan..."));
    save->setObjectName(QStringLiteral("planSave"));
    connect(load, &QPushButton::clicked, this, [this] { openDialog(false); });
    connect(save, &QPushButton::clicked, this, [this] { openDialog(true); });

    auto* bulk = new QHBoxLayout;
    bulk->addWidget(new QLabel(tr("Set")));
    bulk->addWidget(m_bulkField);
    bulk->addWidget(new QLabel(tr("to")));
    bulk->addWidget(m_bulkValue, 1);
    bulk->addWidget(m_bulkApply);
    bulk->addSpacing(12);
    bulk->addWidget(undoBtn);
    bulk->addWidget(redoBtn);
    bulk->addWidget(load);
    bulk->addWidget(save);

    auto* jsonBox = new QWidget;
    auto* jl = new QVBoxLayout(jsonBox);
    jl->setContentsMargins(0, 0, 0, 0);
    auto* jh = new QHBoxLayout;
    auto* jsonLabel = new QLabel(tr("Plan JSON (default and glob rules; later rules win):"));
    jsonLabel->setWordWrap(true); // wraps rather than taking width from the table
    jh->addWidget(jsonLabel, 1);
    jh->addWidget(m_jsonApply);
    jl->addLayout(jh);
    QFont mono(QStringLiteral("monospace"));
    mono.setStyleHint(QFont::TypeWriter);
    m_json->setFont(mono);
    m_json->setTabChangesFocus(true); // Tab moves on instead of typing a tab into the JSON
    jl->addWidget(m_json, 1);

    auto* split = new QSplitter(Qt::Horizontal);
    split->setObjectName(QStringLiteral("planSplit")); // MainWindow remembers its state
    split->addWidget(m_table);
    split->addWidget(jsonBox);
    // The table takes what the window gains or loses, so that its columns fit down to 1280x800.
    split->setStretchFactor(0, 1);
    split->setStretchFactor(1, 0);
    split->setSizes({720, 240});

    makeMessageLabel(m_message); // a long error wraps instead of widening the window
    QFont bold = m_totals->font();
    bold.setBold(true);
    m_totals->setFont(bold);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addLayout(bulk);
    m_activation = new ActivationSettings(m_model);
    layout->addWidget(m_activation);
    layout->addWidget(split, 1);
    layout->addWidget(m_totals);
    layout->addWidget(m_message);

    connect(m_bulkApply, &QPushButton::clicked, this, &PlanEditor::applyBulk);
    connect(m_bulkValue, &QLineEdit::returnPressed, this, &PlanEditor::applyBulk);
    connect(m_jsonApply, &QPushButton::clicked, this, &PlanEditor::applyJson);
    connect(m_model, &PlanTableModel::editRejected, this, [this](const QString& m) { showMessage(m, true); });
    connect(m_model, &PlanTableModel::planChanged, this, [this] {
        refreshJson();
        m_totals->setText(m_model->totalsText());
        Q_EMIT planChanged();
    });
    refreshJson();
    m_totals->setText(m_model->totalsText());
}

void PlanEditor::setColumnShown(int column, bool shown)
{
    setChooserColumnShown(m_table->horizontalHeader(), QStringLiteral("planEditor/hiddenColumns"), column, shown);
}

void PlanEditor::setConfig(const std::optional<ModelConfig>& config) { m_model->setConfig(config); }

void PlanEditor::refreshJson()
{
    m_json->setPlainText(QString::fromStdString(io::toJsonText(pipeline::quantPlanToJson(m_model->plan()))));
}

void PlanEditor::showMessage(const QString& text, bool error)
{
    m_message->setStyleSheet(error ? QStringLiteral("color: #b00020") : QString());
    m_message->setText(breakableText(text));
}

void PlanEditor::applyBulk()
{
    QList<int> rows;
    for (const QModelIndex& i : m_table->selectionModel()->selectedRows())
        rows << i.row();
    std::sort(rows.begin(), rows.end());
    const QString err = m_model->setField(rows, m_bulkField->currentData().toInt(), m_bulkValue->text());
    if (err.isEmpty()) showMessage(tr("Applied to %n tensor(s)", nullptr, int(rows.size())), false);
    else showMessage(err, true);
}

void PlanEditor::applyJson()
{
    auto plan = pipeline::quantPlanFromText(m_json->toPlainText().toStdString(), "plan editor");
    if (!plan.ok()) {
        showMessage(QString::fromStdString(plan.error().toString()), true);
        return;
    }
    const QString err = m_model->applyPlan(*plan, tr("Edit plan JSON"));
    if (err.isEmpty()) {
        QStringList warn;
        for (const auto& w : m_model->resolved().warnings)
            warn << QString::fromStdString(w.detail);
        showMessage(warn.isEmpty() ? tr("Plan applied")
                                   : tr("Plan applied; warnings: %1").arg(warn.join(QStringLiteral("; "))),
                    false);
    } else showMessage(err, true);
}

QString PlanEditor::loadPlanFile(const QString& path)
{
    auto plan = pipeline::loadQuantPlan(path.toStdString());
    QString err = plan.ok() ? m_model->applyPlan(*plan, tr("Load %1").arg(path))
                            : QString::fromStdString(plan.error().toString());
    showMessage(err.isEmpty() ? tr("Loaded %1").arg(path) : err, !err.isEmpty());
    return err;
}

QString PlanEditor::savePlanFile(const QString& path)
{
    const Status st = pipeline::saveQuantPlan(m_model->plan(), path.toStdString());
    const QString err = st.ok() ? QString() : QString::fromStdString(st.error().toString());
    showMessage(err.isEmpty() ? tr("Saved %1").arg(path) : err, !err.isEmpty());
    return err;
}

void PlanEditor::openDialog(bool save)
{
    auto* d =
        new QFileDialog(this, save ? tr("Save plan") : tr("Load plan"), QString(), tr("Plans (*.json);;All files (*)"));
    d->setAttribute(Qt::WA_DeleteOnClose);
    d->setAcceptMode(save ? QFileDialog::AcceptSave : QFileDialog::AcceptOpen);
    d->setFileMode(save ? QFileDialog::AnyFile : QFileDialog::ExistingFile);
    d->setDefaultSuffix(QStringLiteral("json"));
    connect(d, &QFileDialog::fileSelected, this, [this, save](const QString& f) {
        if (save) savePlanFile(f);
        else loadPlanFile(f);
    });
    d->open();
}

bool PlanEditor::selectTensor(const QString& name)
{
    QString n = name;
    if (n.endsWith(QLatin1String(".weight"))) n.chop(7);
    for (int r = 0; r < m_model->rowCount(); ++r)
        if (m_model->ruleName(r) == n) {
            m_table->selectRow(r);
            m_table->scrollTo(m_model->index(r, 0));
            return true;
        }
    return false;
}

} // namespace qb::ui
