#pragma once
// GridLookup: which quantization grid an export stores for a tensor.
// HF weight name -> the tensor's stored grid (null: not quantized). Exporters unpack one tensor at
// a time, so an export holds the run's compact grids plus one tensor's codes and values.

#include "quant/stored_grid.h"

#include <functional>
#include <string>

namespace qb::exporting {

using GridLookup = std::function<quant::StoredGridPtr(const std::string& hfName)>;

} // namespace qb::exporting
