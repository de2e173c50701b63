#pragma once
// Message labels: a QLabel that shows text of any length (an error naming a file and a tensor, a
// filter that matches nothing) wraps inside the width its layout gives it and never asks the
// layout for more, so a long message cannot widen a dock or the window. GUI thread only.

#include <QString>

class QLabel;

namespace qb::ui {

// Word wrap, and a horizontal size policy that ignores the text's width (the height still
// follows the wrapped text).
void makeMessageLabel(QLabel* label);

// `text` with a zero-width space after each '.', '/', '\\', '_', ',' and ':' of a word longer than
// 24 characters, so that long paths, tensor names and globs can wrap at those characters instead
// of running past the label; shorter words are left as they are.
QString breakableText(const QString& text);

} // namespace qb::ui
