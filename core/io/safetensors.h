#pragma once
// safetensors reader: single files and shards listed by a *.safetensors.index.json.
//
// Tensors come back as TensorInfo views into a read-only memory mapping of the file (no copy).
// Every structural rule of the reference reader is enforced (see safetensors.cpp); a violation
// is an Error naming the file, the tensor and the offset. Pure functions, thread-safe. This is
// the one safetensors parser: project bundles (.qbproj) read their tensors through it too.

#include "base/result.h"
#include "base/tensor.h"

#include <string>
#include <vector>

namespace qb::io {

// Tensors of one file, in data order (sorted by data_offsets).
Result<std::vector<TensorInfo>> readSafetensorsFile(const std::string& path);
// The same for safetensors bytes already in memory (e.g. a zip entry wrapped by
// MappedFile::fromBytes); the tensors view `bytes` and keep its owner alive. Errors name
// bytes.path().
Result<std::vector<TensorInfo>> parseSafetensors(const ByteRange& bytes);

struct ShardedTensors {
    std::vector<TensorInfo> tensors; // shard by shard, data order within a shard
    std::vector<std::string> files;  // shard paths, in the order read
};

// Reads every shard named by the index's weight_map and checks that each listed tensor is in the
// shard the index names.
Result<ShardedTensors> readSafetensorsIndex(const std::string& indexPath);

} // namespace qb::io
