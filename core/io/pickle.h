#pragma once
// A restricted unpickler for the data.pkl of torch.save checkpoints (FORMATS.md §6.2-6.4).
//
// It runs the pickle stack machine for the opcodes torch's weights_only loader accepts (protocols
// 2-5), but never imports or calls anything: GLOBAL resolves only an allow-list (OrderedDict,
// torch's tensor-rebuild functions, Parameter and the typed storage classes) to tags, REDUCE /
// NEWOBJ interpret those tags, and persistent ids ("storage", <class>, key, location, numel)
// become Storage values that name the archive member holding the bytes. Any other global is an
// error naming it. Values are shared (memo semantics), single-threaded; the result is immutable.

#include "base/dtype.h"
#include "base/mapped_file.h"
#include "base/result.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace qb::io::detail {

struct PickleValue;
using PickleRef = std::shared_ptr<PickleValue>;

struct PickleValue {
    enum class Kind { None, Bool, Int, Float, String, Bytes, Tuple, List, Dict, Set, Global, Storage, Tensor };
    Kind kind = Kind::None;
    std::int64_t i = 0;                                // Int, Bool
    double f = 0;                                      // Float
    std::string s;                                     // String, Bytes; Global: "module.name"
    std::vector<PickleRef> items;                      // Tuple, List, Set
    std::vector<std::pair<PickleRef, PickleRef>> dict; // Dict, insertion order
    // Storage: archive key, element type, element count.
    std::string storageKey;
    DType dtype = DType::F32;
    std::int64_t storageNumel = 0;
    // Tensor: a strided view of `storage` (offset and strides in elements).
    PickleRef storage;
    std::int64_t storageOffset = 0;
    std::vector<std::int64_t> size;
    std::vector<std::int64_t> stride;
};

// Decodes `data`; `context` (the archive and member) prefixes error messages.
Result<PickleRef> unpickleTorch(const ByteRange& data, const std::string& context);

} // namespace qb::io::detail
