#include "models/tensor_tree_model.h"

#include "io/ggml_codec.h"

#include <QRegularExpression>

namespace qb::ui {

QString formatBytes(qint64 bytes)
{
    const char* units[] = {"B", "KB", "MB", "GB", "TB"};
    double v = double(bytes);
    int u = 0;
    while (v >= 1000.0 && u < 4) {
        v /= 1000.0;
        ++u;
    }
    return u == 0 ? QStringLiteral("%1 B").arg(bytes)
                  : QStringLiteral("%1 %2").arg(v, 0, 'f', v < 10 ? 2 : 1).arg(QLatin1String(units[u]));
}

QString formatCount(qint64 n)
{
    if (n >= 1000000000) return QStringLiteral("%1 B").arg(double(n) / 1e9, 0, 'f', 2);
    if (n >= 1000000) return QStringLiteral("%1 M").arg(double(n) / 1e6, 0, 'f', 2);
    if (n >= 1000) return QStringLiteral("%1 K").arg(double(n) / 1e3, 0, 'f', 1);
    return QString::number(n);
}

TensorTreeModel::TensorTreeModel(QObject* parent) : QAbstractItemModel(parent) {}

void TensorTreeModel::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    beginResetModel();
    m_checkpoint = std::move(checkpoint);
    m_groups.clear();
    if (m_checkpoint) {
        const auto layers = m_checkpoint->config.numHiddenLayers;
        m_groups.push_back({tr("Embedding"), {}, 0, 0});
        for (qint64 l = 0; l < layers; ++l)
            m_groups.push_back({tr("Layer %1").arg(l), {}, 0, 0});
        m_groups.push_back({tr("Head"), {}, 0, 0});
        static const QRegularExpression layerRe(QStringLiteral("^model\\.layers\\.(\\d+)\\."));
        for (int i = 0; i < int(m_checkpoint->tensors.size()); ++i) {
            const auto& t = m_checkpoint->tensors[std::size_t(i)];
            const QString name = QString::fromStdString(t.name);
            std::size_t g = m_groups.size() - 1;
            if (const auto m = layerRe.match(name); m.hasMatch()) {
                const qint64 l = m.captured(1).toLongLong();
                if (l >= 0 && l < layers) g = std::size_t(1 + l);
            } else if (name.contains(QLatin1String("embed_tokens"))) {
                g = 0;
            }
            m_groups[g].tensors.push_back(i);
            m_groups[g].params += t.numel();
            m_groups[g].bytes += qint64(t.bytes.size());
        }
    }
    endResetModel();
}

QModelIndex TensorTreeModel::indexForTensor(const QString& name) const
{
    if (!m_checkpoint) return {};
    for (int g = 0; g < int(m_groups.size()); ++g) {
        const auto& ts = m_groups[std::size_t(g)].tensors;
        for (int r = 0; r < int(ts.size()); ++r)
            if (QString::fromStdString(m_checkpoint->tensors[std::size_t(ts[std::size_t(r)])].name) == name)
                return createIndex(r, 0, quintptr(g));
    }
    return {};
}

QModelIndex TensorTreeModel::index(int row, int column, const QModelIndex& parent) const
{
    if (!hasIndex(row, column, parent)) return {};
    if (!parent.isValid()) return createIndex(row, column, kGroupId);
    return createIndex(row, column, quintptr(parent.row()));
}

QModelIndex TensorTreeModel::parent(const QModelIndex& child) const
{
    if (!child.isValid() || child.internalId() == kGroupId) return {};
    return createIndex(int(child.internalId()), 0, kGroupId);
}

int TensorTreeModel::rowCount(const QModelIndex& parent) const
{
    if (!parent.isValid()) return int(m_groups.size());
    if (parent.column() != 0 || parent.internalId() != kGroupId) return 0;
    return int(m_groups[std::size_t(parent.row())].tensors.size());
}

int TensorTreeModel::columnCount(const QModelIndex&) const { return ColumnCount; }

QVariant TensorTreeModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || !m_checkpoint) return {};
    const bool isGroup = index.internalId() == kGroupId;
    if (isGroup) {
        const Group& g = m_groups[std::size_t(index.row())];
        switch (role) {
        case Qt::DisplayRole:
            switch (index.column()) {
            case NameColumn: return g.title;
            case ParamsColumn: return formatCount(g.params);
            case BytesColumn: return formatBytes(g.bytes);
            default: return {};
            }
        case SortRole:
            switch (index.column()) {
            case ParamsColumn: return g.params;
            case BytesColumn: return g.bytes;
            default: return index.row(); // model order
            }
        default: return {};
        }
    }
    const Group& g = m_groups[std::size_t(index.internalId())];
    const auto& t = m_checkpoint->tensors[std::size_t(g.tensors[std::size_t(index.row())])];
    switch (role) {
    case Qt::DisplayRole:
        switch (index.column()) {
        case NameColumn: {
            // Under "Layer N" the "model.layers.N." prefix is implied by the group.
            static const QRegularExpression prefix(QStringLiteral("^model\\.layers\\.\\d+\\."));
            return QString::fromStdString(t.name).remove(prefix);
        }
        case ShapeColumn: return QString::fromStdString(t.shapeString());
        case DTypeColumn:
            if (t.ggmlType >= 0) { // GGUF block types by their llama.cpp names (Q8_0, Q4_K, ...)
                const QString name = QString::fromLatin1(io::ggmlTypeName(t.ggmlType));
                return name == QLatin1String("?") ? QStringLiteral("ggml:%1").arg(t.ggmlType) : name;
            }
            return QString::fromLatin1(dtypeName(t.dtype));
        case ParamsColumn: return formatCount(t.numel());
        case BytesColumn: return formatBytes(qint64(t.bytes.size()));
        default: return {};
        }
    case Qt::ToolTipRole: return QString::fromStdString(t.name + " " + t.shapeString());
    case TensorNameRole: return QString::fromStdString(t.name);
    case SortRole:
        switch (index.column()) {
        case ParamsColumn: return qint64(t.numel());
        case BytesColumn: return qint64(t.bytes.size());
        case NameColumn: return index.row();
        default: return data(index, Qt::DisplayRole);
        }
    case Qt::TextAlignmentRole:
        return index.column() >= ParamsColumn ? QVariant(Qt::AlignRight | Qt::AlignVCenter) : QVariant();
    default: return {};
    }
}

QVariant TensorTreeModel::headerData(int section, Qt::Orientation o, int role) const
{
    if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
    switch (section) {
    case NameColumn: return tr("Tensor");
    case ShapeColumn: return tr("Shape");
    case DTypeColumn: return tr("Type");
    case ParamsColumn: return tr("Params");
    case BytesColumn: return tr("Bytes");
    default: return {};
    }
}

} // namespace qb::ui
