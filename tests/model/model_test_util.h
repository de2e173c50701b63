#pragma once
// Helpers shared by the model/eval/pipeline tests: load a checkpoint directory into a Model,
// read the demo golden files (raw little-endian arrays, golden.json) and fixture expectations.

#include "io/checkpoint.h"
#include "model/model.h"
#include "pipeline/model_loader.h"

#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace qbtest {

inline std::string demoDir() { return QB_DEMO_DIR; }
inline std::string fixtureDir(const std::string& name) { return std::string(QB_TESTS_DIR) + "/model/fixtures/" + name; }

// Empty pointer + message on failure.
inline std::shared_ptr<qb::model::Model> loadModelDir(const std::string& dir, std::string* error = nullptr)
{
    auto ck = qb::io::openCheckpoint(dir);
    if (!ck.ok()) {
        if (error) *error = ck.error().toString();
        return {};
    }
    auto m = qb::pipeline::loadModel(*ck);
    if (!m.ok()) {
        if (error) *error = m.error().toString();
        return {};
    }
    return *m;
}

template <typename T>
std::vector<T> readRaw(const std::string& path)
{
    QFile f(QString::fromStdString(path));
    if (!f.open(QIODevice::ReadOnly)) return {};
    const QByteArray b = f.readAll();
    std::vector<T> v(std::size_t(b.size()) / sizeof(T));
    std::memcpy(v.data(), b.constData(), v.size() * sizeof(T));
    return v;
}

inline QJsonObject readJson(const std::string& path)
{
    QFile f(QString::fromStdString(path));
    if (!f.open(QIODevice::ReadOnly)) return {};
    return QJsonDocument::fromJson(f.readAll()).object();
}

inline std::vector<std::int32_t> goldenTokens() { return readRaw<std::int32_t>(demoDir() + "/golden/eval_tokens.i32"); }
inline QJsonObject goldenJson() { return readJson(demoDir() + "/golden/golden.json"); }

} // namespace qbtest
