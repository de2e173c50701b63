#include "widgets/calibration_settings.h"

#include <algorithm>

#include <QComboBox>
#include <QLineEdit>
#include <QSignalBlocker>
#include <QSpinBox>

namespace qb::ui {

CalibrationSettings::CalibrationSettings(QObject* parent) : QObject(parent) {}

const std::vector<CalibrationPreset>& CalibrationSettings::presets()
{
    static const std::vector<CalibrationPreset> p = {
        {tr("Quick"), 32, 128}, {tr("Standard"), 128, 512}, {tr("Literature"), 128, 2048}};
    return p;
}

int CalibrationSettings::presetIndex() const
{
    const auto& p = presets();
    for (std::size_t i = 0; i < p.size(); ++i)
        if (p[i].windows == m_windows && std::min(p[i].length, m_maxLength) == m_length) return int(i);
    return -1;
}

void CalibrationSettings::setTextPath(const QString& path)
{
    if (path == m_text) return;
    m_text = path;
    Q_EMIT changed();
}

void CalibrationSettings::setWindows(int windows)
{
    if (windows == m_windows) return;
    m_windows = windows;
    Q_EMIT changed();
}

void CalibrationSettings::setLength(int length)
{
    if (length == m_length) return;
    m_length = length;
    Q_EMIT changed();
}

void CalibrationSettings::applyPreset(int index)
{
    const auto& p = presets();
    if (index < 0 || index >= int(p.size())) return;
    const int length = std::min(p[std::size_t(index)].length, m_maxLength);
    const bool same = m_windows == p[std::size_t(index)].windows && m_length == length;
    m_windows = p[std::size_t(index)].windows;
    m_length = length;
    if (!same) Q_EMIT changed();
}

void CalibrationSettings::setMaxLength(int maxLength)
{
    maxLength = std::max(8, maxLength);
    if (maxLength == m_maxLength) return;
    m_maxLength = maxLength;
    m_length = std::min(m_length, m_maxLength);
    Q_EMIT changed();
}

void CalibrationSettings::bind(QLineEdit* text, QSpinBox* windows, QSpinBox* length, QComboBox* preset)
{
    if (preset && preset->count() == 0) {
        // Short names (the spin boxes beside show the numbers), so the text path keeps its room.
        for (const auto& p : presets()) {
            preset->addItem(p.name);
            preset->setItemData(preset->count() - 1,
                                tr("%1 windows × %2 tokens (at most the model's context)").arg(p.windows).arg(p.length),
                                Qt::ToolTipRole);
        }
        preset->addItem(tr("Custom"));
        preset->setSizeAdjustPolicy(QComboBox::AdjustToContents);
        preset->setToolTip(tr("Calibration windows × tokens per window; shared by the Activations and "
                              "Quantization tabs"));
    }
    text->setMinimumWidth(110);
    auto show = [=, this] {
        const QSignalBlocker b1(text), b2(windows), b3(length);
        if (text->text() != m_text) text->setText(m_text);
        windows->setValue(m_windows);
        length->setMaximum(m_maxLength);
        length->setValue(m_length);
        if (preset) {
            const QSignalBlocker b4(preset);
            const int i = presetIndex();
            preset->setCurrentIndex(i >= 0 ? i : preset->count() - 1);
        }
    };
    show();
    connect(this, &CalibrationSettings::changed, text, show);
    connect(text, &QLineEdit::textChanged, this, &CalibrationSettings::setTextPath);
    connect(windows, &QSpinBox::valueChanged, this, &CalibrationSettings::setWindows);
    connect(length, &QSpinBox::valueChanged, this, &CalibrationSettings::setLength);
    if (preset) connect(preset, &QComboBox::activated, this, &CalibrationSettings::applyPreset);
}

} // namespace qb::ui
