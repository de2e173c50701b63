#include "io/shard_index.h"

#include "io/json_value.h"

#include <QByteArray>
#include <QDir>
#include <QFile>
#include <QFileInfo>

#include <set>

namespace qb::io {

Result<ShardIndex> readShardIndex(const std::string& indexPath)
{
    QFile f(QString::fromStdString(indexPath));
    if (!f.open(QIODevice::ReadOnly))
        return makeError(ErrorCode::Io, "cannot open index: " + f.errorString().toStdString(), indexPath);
    const QByteArray bytes = f.readAll();
    auto doc = parseJson(std::string_view(bytes.constData(), std::size_t(bytes.size())), indexPath);
    if (!doc)
        return makeError(ErrorCode::Format, "index is not valid JSON: " + doc.error().message, doc.error().context);
    const JsonValue* wm = doc->isObject() ? doc->find("weight_map") : nullptr;
    if (!wm || !wm->isObject() || wm->asObject().empty())
        return makeError(ErrorCode::Format, "index has no \"weight_map\" object", indexPath);
    const QDir dir = QFileInfo(f).absoluteDir();
    ShardIndex out;
    std::set<std::string> shards;
    for (const JsonMember& m : wm->asObject()) {
        if (!m.value.isString())
            return makeError(ErrorCode::Format, "weight_map entry for " + m.key + " is not a string", indexPath);
        const QString file = QString::fromStdString(m.value.asString());
        if (file.contains('/') || file.contains('\\') || file.startsWith('.'))
            return makeError(ErrorCode::Format, "weight_map names a shard outside the directory: " + file.toStdString(),
                             indexPath);
        const std::string shard = dir.filePath(file).toStdString();
        out.weightMap[m.key] = shard;
        shards.insert(shard);
    }
    out.shards.assign(shards.begin(), shards.end());
    return out;
}

} // namespace qb::io
