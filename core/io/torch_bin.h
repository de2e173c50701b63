#pragma once
// PyTorch .bin checkpoints (torch.save zip format, FORMATS.md §6): a state_dict of tensors.
//
// The zip is parsed from the memory mapping (central directory for names, local headers for data
// offsets; members must be stored, not compressed). data.pkl is decoded by a restricted
// unpickler (pickle.h) that only admits torch's tensor-rebuild functions. Contiguous tensors are
// views into the mapping; a tensor with non-contiguous strides is copied once into an owned
// buffer in row-major order. Pure function, thread-safe.

#include "base/result.h"
#include "base/tensor.h"

#include <string>
#include <vector>

namespace qb::io {

struct TorchBinTensors {
    std::vector<TensorInfo> tensors;   // state_dict order
    std::vector<std::string> warnings; // non-tensor entries skipped, strided tensors copied
};

Result<TorchBinTensors> readTorchBinFile(const std::string& path);

} // namespace qb::io
