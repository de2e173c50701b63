#include "widgets/activation_settings.h"

#include "models/plan_table_model.h"
#include "pipeline/quant_plan.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenu>
#include <QSignalBlocker>
#include <QSpinBox>
#include <QToolButton>

#include <tuple>

namespace qb::ui {

namespace {

QComboBox* bitsCombo(const QString& name, const QString& tip)
{
    auto* c = new QComboBox;
    c->setObjectName(name);
    c->setToolTip(tip);
    c->addItem(QObject::tr("off"), 0);
    for (int b : {8, 6, 4})
        c->addItem(QString::number(b), b);
    return c;
}

} // namespace

ActivationSettings::ActivationSettings(PlanTableModel* plan, QWidget* parent)
    : QWidget(parent), m_plan(plan),
      m_abits(bitsCombo(QStringLiteral("activationBits"),
                        tr("Activation bits of every linear input: fake-quantized per token, asymmetric, "
                           "dynamic Min-Max (W8A8, W6A6, W4A4)"))),
      m_clip(new QDoubleSpinBox), m_static(new QCheckBox(tr("static"))),
      m_kvbits(bitsCombo(QStringLiteral("kvBits"),
                         tr("Key and value bits, one range per head and token (attention probabilities stay F32)"))),
      m_smooth(new QCheckBox(tr("SmoothQuant α"))), m_alpha(new QDoubleSpinBox), m_rotate(new QComboBox),
      m_epochs(new QSpinBox), m_presets(new QToolButton), m_note(new QLabel)
{
    setObjectName(QStringLiteral("activationSettings"));
    m_clip->setObjectName(QStringLiteral("activationClip"));
    m_clip->setRange(0.5, 1.0);
    m_clip->setSingleStep(0.05);
    m_clip->setDecimals(2);
    m_clip->setValue(1.0);
    m_clip->setToolTip(tr("Clip ratio: the dynamic range is multiplied by it (RUQuant's lac; 0.9 for W4A4)"));
    m_static->setObjectName(QStringLiteral("activationStatic"));
    m_static->setToolTip(tr("One range per input calibrated once, instead of each token's own"));
    m_smooth->setObjectName(QStringLiteral("smoothCheck"));
    m_smooth->setToolTip(tr("SmoothQuant: per-channel factors max|x|^α / max|W|^(1-α) move activation outliers "
                            "into the weights (folded into the norms, v_proj and up_proj; online for a GQA o_proj)"));
    m_alpha->setObjectName(QStringLiteral("smoothAlpha"));
    m_alpha->setRange(0.0, 1.0);
    m_alpha->setSingleStep(0.05);
    m_alpha->setDecimals(2);
    m_alpha->setValue(0.6);
    m_rotate->setObjectName(QStringLiteral("rotation"));
    m_rotate->setSizeAdjustPolicy(QComboBox::AdjustToContents);
    m_rotate->setSizePolicy(QSizePolicy::Fixed, QSizePolicy::Fixed);
    m_rotate->addItem(tr("no rotation"), int(pipeline::PlanRotation::None));
    m_rotate->addItem(tr("Hadamard, residual (folded)"), int(pipeline::PlanRotation::Residual));
    m_rotate->addItem(tr("Hadamard, QuaRot (+ online)"), int(pipeline::PlanRotation::Hadamard));
    m_rotate->addItem(tr("RUQuant (online)"), int(pipeline::PlanRotation::Ruquant));
    m_rotate->setToolTip(tr("Residual: a randomized Hadamard rotation of the residual stream folded into every "
                            "weight (exports as ordinary weights). QuaRot: also online Hadamards on the o_proj "
                            "and down_proj inputs and per head on q/k (not storable in a GGUF). RUQuant: "
                            "data-driven block rotations (Householder + Givens), a zig-zag permutation and a "
                            "global Householder reflection per layer and input, built on the calibration set"));
    m_epochs->setObjectName(QStringLiteral("ruquantEpochs"));
    m_epochs->setRange(0, 100);
    m_epochs->setPrefix(tr("fine-tune "));
    m_epochs->setSuffix(tr(" ep"));
    m_epochs->setToolTip(tr("RUQuant: epochs of AdamW on each global Householder vector, minimising the layer "
                            "output error of the quantized layer (0: off; the paper uses 20)"));
    m_presets->setObjectName(QStringLiteral("ruquantPresets"));
    m_presets->setText(tr("RUQuant preset"));
    m_presets->setPopupMode(QToolButton::InstantPopup);
    m_presets->setToolTip(tr("Replace the plan with RUQuant's setting: RTN weights per channel (range x0.8 at 4 "
                             "bits), per-token activations (clip 0.9 at 4 bits), Q/K/V per head and token, "
                             "SmoothQuant 0.6, RUQuant transforms"));
    auto* menu = new QMenu(m_presets);
    for (const auto& [label, w, a, ft] : {std::tuple(tr("W4A4"), 4, 4, 0), std::tuple(tr("W4A4 + fine-tune"), 4, 4, 20),
                                          std::tuple(tr("W6A6"), 6, 6, 0)})
        menu->addAction(label, this, [this, label, w, a, ft] {
            m_plan->applyPlan(pipeline::ruquantPresetPlan(w, a, ft), tr("RUQuant %1 preset").arg(label));
        });
    m_presets->setMenu(menu);
    m_note->setObjectName(QStringLiteral("activationNote"));

    auto* l = new QHBoxLayout(this);
    l->setContentsMargins(0, 0, 0, 0);
    l->addWidget(new QLabel(tr("Activations")));
    l->addWidget(m_abits);
    l->addWidget(new QLabel(tr("clip")));
    l->addWidget(m_clip);
    l->addWidget(m_static);
    l->addSpacing(8);
    l->addWidget(new QLabel(tr("KV")));
    l->addWidget(m_kvbits);
    l->addSpacing(8);
    l->addWidget(m_smooth);
    l->addWidget(m_alpha);
    l->addSpacing(8);
    l->addWidget(m_rotate);
    l->addWidget(m_epochs);
    l->addWidget(m_presets);
    l->addWidget(m_note, 1);

    connect(m_abits, &QComboBox::activated, this, [this] { applyToPlan(tr("activation bits")); });
    connect(m_kvbits, &QComboBox::activated, this, [this] { applyToPlan(tr("KV bits")); });
    connect(m_clip, &QDoubleSpinBox::editingFinished, this, [this] { applyToPlan(tr("activation clip")); });
    connect(m_static, &QCheckBox::toggled, this, [this] { applyToPlan(tr("static activation ranges")); });
    connect(m_smooth, &QCheckBox::toggled, this, [this] { applyToPlan(tr("smoothing")); });
    connect(m_alpha, &QDoubleSpinBox::editingFinished, this, [this] { applyToPlan(tr("smoothing α")); });
    connect(m_rotate, &QComboBox::activated, this, [this] { applyToPlan(tr("rotation")); });
    connect(m_epochs, &QSpinBox::editingFinished, this, [this] { applyToPlan(tr("RUQuant fine-tuning")); });
    connect(m_plan, &PlanTableModel::planChanged, this, &ActivationSettings::syncFromPlan);
    syncFromPlan();
}

void ActivationSettings::syncFromPlan()
{
    m_syncing = true;
    const pipeline::ActivationPlan& a = m_plan->plan().activation;
    auto pick = [](QComboBox* c, int bits) { c->setCurrentIndex(std::max(0, c->findData(bits))); };
    pick(m_abits, a.defaults.bits.value_or(0));
    pick(m_kvbits, a.kvBits);
    m_clip->setValue(a.defaults.clip.value_or(1.0));
    m_static->setChecked(a.defaults.staticRange.value_or(false));
    m_smooth->setChecked(a.smoothAlpha.has_value());
    if (a.smoothAlpha) m_alpha->setValue(*a.smoothAlpha);
    m_alpha->setEnabled(a.smoothAlpha.has_value());
    m_rotate->setCurrentIndex(std::max(0, m_rotate->findData(int(a.rotate))));
    m_epochs->setValue(a.ruquant.finetuneEpochs);
    m_epochs->setVisible(a.rotate == pipeline::PlanRotation::Ruquant);
    const bool groups = std::any_of(a.groups.begin(), a.groups.end(),
                                    [](const pipeline::ActivationGroupSettings& g) { return g.bits.has_value(); });
    const bool oddBits = m_abits->findData(a.defaults.bits.value_or(0)) < 0 || m_kvbits->findData(a.kvBits) < 0;
    const QString summary = QString::fromStdString(a.describe());
    m_note->setText(groups || oddBits || a.qBits > 0 ? tr("per group: %1").arg(summary) : QString());
    m_note->setToolTip(groups || oddBits || a.qBits > 0
                           ? tr("Some groups (qkv, o, gate_up, down) differ from the row's settings: see the plan "
                                "JSON. All together: %1")
                                 .arg(summary)
                           : QString());
    m_syncing = false;
}

void ActivationSettings::applyToPlan(const QString& what)
{
    if (m_syncing) return;
    pipeline::QuantPlan plan = m_plan->plan();
    pipeline::ActivationPlan& a = plan.activation;
    const int abits = m_abits->currentData().toInt();
    a.defaults.bits = abits;
    a.defaults.clip = m_clip->value() < 1.0 ? std::optional(m_clip->value()) : std::nullopt;
    a.defaults.staticRange = m_static->isChecked() ? std::optional(true) : std::nullopt;
    a.hasActivations = abits > 0 || a.defaults.clip || a.defaults.staticRange ||
                       std::any_of(a.groups.begin(), a.groups.end(), [](const pipeline::ActivationGroupSettings& g) {
                           return g != pipeline::ActivationGroupSettings{};
                       });
    if (!a.hasActivations) a.defaults = {};
    a.kvBits = m_kvbits->currentData().toInt();
    a.hasKv = a.kvBits > 0 || a.qBits > 0;
    m_alpha->setEnabled(m_smooth->isChecked());
    a.smoothAlpha = m_smooth->isChecked() ? std::optional(m_alpha->value()) : std::nullopt;
    a.rotate = pipeline::PlanRotation(m_rotate->currentData().toInt());
    a.ruquant.finetuneEpochs = a.rotate == pipeline::PlanRotation::Ruquant ? m_epochs->value() : 0;
    m_epochs->setVisible(a.rotate == pipeline::PlanRotation::Ruquant);
    a.hasTransform = a.smoothAlpha || a.rotate != pipeline::PlanRotation::None || a.seed != 0;
    const QString err = m_plan->applyPlan(plan, what);
    if (!err.isEmpty()) syncFromPlan(); // refused: show the plan as it is
}

} // namespace qb::ui
