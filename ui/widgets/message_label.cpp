#include "widgets/message_label.h"

#include <QLabel>
#include <QSizePolicy>

namespace qb::ui {

void makeMessageLabel(QLabel* label)
{
    label->setWordWrap(true);
    QSizePolicy policy(QSizePolicy::Ignored, QSizePolicy::Preferred);
    policy.setHeightForWidth(true);
    label->setSizePolicy(policy);
}

QString breakableText(const QString& text)
{
    // Only long runs without a space get break opportunities: short words, and so most messages,
    // stay exactly as written.
    constexpr qsizetype kLongWord = 24;
    QString out;
    out.reserve(text.size() + text.size() / 8);
    qsizetype wordStart = 0;
    for (qsizetype i = 0; i <= text.size(); ++i) {
        if (i < text.size() && !text[i].isSpace()) continue;
        const QStringView word = QStringView(text).mid(wordStart, i - wordStart);
        for (const QChar c : word) {
            out += c;
            if (word.size() > kLongWord && (c == QLatin1Char('.') || c == QLatin1Char('/') || c == QLatin1Char('\\') ||
                                            c == QLatin1Char('_') || c == QLatin1Char(',') || c == QLatin1Char(':')))
                out += QChar(0x200B);
        }
        if (i < text.size()) out += text[i];
        wordStart = i + 1;
    }
    return out;
}

} // namespace qb::ui
