#include "io/shard_index.h"

#include <QByteArray>
#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QJsonDocument>
#include <QJsonObject>

#include <set>

namespace qb::io {

Result<ShardIndex> readShardIndex(const std::string& indexPath)
{
    QFile f(QString::fromStdString(indexPath));
    if (!f.open(QIODevice::ReadOnly))
        return makeError(ErrorCode::Io, "cannot open index: " + f.errorString().toStdString(),
                         indexPath);
    QJsonParseError perr;
    const QJsonDocument doc = QJsonDocument::fromJson(f.readAll(), &perr);
    if (doc.isNull())
        return makeError(ErrorCode::Format,
                         "index is not valid JSON: " + perr.errorString().toStdString() +
                             " at offset " + std::to_string(perr.offset),
                         indexPath);
    const QJsonValue wm = doc.object().value("weight_map");
    if (!wm.isObject() || wm.toObject().isEmpty())
        return makeError(ErrorCode::Format, "index has no \"weight_map\" object", indexPath);
    const QDir dir = QFileInfo(f).absoluteDir();
    ShardIndex out;
    std::set<std::string> shards;
    const QJsonObject map = wm.toObject();
    for (auto it = map.begin(); it != map.end(); ++it) {
        if (!it.value().isString())
            return makeError(ErrorCode::Format,
                             "weight_map entry for " + it.key().toStdString() + " is not a string",
                             indexPath);
        const QString file = it.value().toString();
        if (file.contains('/') || file.contains('\\') || file.startsWith('.'))
            return makeError(
                ErrorCode::Format,
                "weight_map names a shard outside the directory: " + file.toStdString(), indexPath);
        const std::string shard = dir.filePath(file).toStdString();
        out.weightMap[it.key().toStdString()] = shard;
        shards.insert(shard);
    }
    out.shards.assign(shards.begin(), shards.end());
    return out;
}

} // namespace qb::io
