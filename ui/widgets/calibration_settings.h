#pragma once
// CalibrationSettings: the one calibration setting of the workbench (text file, windows, window
// length), shared by the Activations and Quantization tabs, with presets. Each tab keeps its own
// widgets (a line edit, two spin boxes and a preset box) bound two-way to the one object, so
// changing the windows in one tab changes them in the other and in what a project saves.
// Threading: GUI thread only.

#include <QObject>
#include <QString>

#include <vector>

class QComboBox;
class QLineEdit;
class QSpinBox;

namespace qb::ui {

struct CalibrationPreset {
    QString name; // "Quick", "Standard", "Literature"
    int windows = 0;
    int length = 0;
};

class CalibrationSettings : public QObject {
    Q_OBJECT
public:
    explicit CalibrationSettings(QObject* parent = nullptr);

    static const std::vector<CalibrationPreset>& presets();

    QString textPath() const { return m_text; }
    int windows() const { return m_windows; }
    int length() const { return m_length; }
    // The preset these numbers are, or -1 (custom).
    int presetIndex() const;

    void setTextPath(const QString& path);
    void setWindows(int windows);
    void setLength(int length);
    void applyPreset(int index);
    // The model's context: window lengths (and presets) are clamped to it; 8192 without a model.
    void setMaxLength(int maxLength);
    int maxLength() const { return m_maxLength; }

    // Binds a tab's widgets: they show the settings and edit them (preset may be null).
    void bind(QLineEdit* text, QSpinBox* windows, QSpinBox* length, QComboBox* preset);

Q_SIGNALS:
    void changed();

private:
    QString m_text;
    // The default is the "Standard" preset: 128 windows as in the GPTQ/NeUQI literature, of 512
    // tokens (the literature's 2048 is the "Literature" preset; the pre-flight estimate shows the cost).
    int m_windows = 128;
    int m_length = 512;
    int m_maxLength = 8192;
};

} // namespace qb::ui
