#pragma once
// Sharded-checkpoint index files (model.safetensors.index.json, pytorch_model.bin.index.json):
// {"metadata": {...}, "weight_map": {"<tensor>": "<shard file>", ...}}. Only weight_map is used.
// Pure function, thread-safe.

#include "base/result.h"

#include <map>
#include <string>
#include <vector>

namespace qb::io {

struct ShardIndex {
    std::map<std::string, std::string> weightMap; // tensor name -> shard path (absolute)
    std::vector<std::string> shards;              // distinct shard paths, sorted
};

Result<ShardIndex> readShardIndex(const std::string& indexPath);

} // namespace qb::io
