#pragma once
// The precompiled header of the test executables (tests/CMakeLists.txt, qb_add_test): what nearly
// every test parses before its own code, about 3 s of a 2-core CI machine's time per test before.
// Only headers whose contents do not depend on the macros that differ between tests (QtCore, not
// QtTest, which reads QT_TESTCASE_BUILDDIR, QT_GUI_LIB and QT_WIDGETS_LIB; Eigen, which reads
// _OPENMP: every test but tests/base links OpenMP) so that one header serves them all.

#include <Eigen/Core>

#include <QByteArray>
#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QObject>
#include <QProcess>
#include <QString>
#include <QStringList>
#include <QTemporaryDir>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>
