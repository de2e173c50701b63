#pragma once
// Writes an importance matrix (io/imatrix.h) as llama.cpp's imatrix tool does, so that
// `llama-quantize --imatrix FILE` and `llama-imatrix --in-file FILE` read it:
// - GGUF: general.type "imatrix", imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size, and
//   per weight (GGUF names, sorted) `W.in_sum2` = mean x² · count (F32, ne [ncols, 1]),
//   `W.counts` = count (F32, ne [1, 1]) and, when the entry has means, `W.in_sum`.
// - legacy .dat: entries sorted by GGUF name with ncall = ceil(count / chunkSize) (the count
//   itself when chunkSize is 0, as a legacy file read back holds calls) and values mean x² · ncall,
//   then chunkCount and the first dataset name.
// Entries are validated first (finite, non-negative); names without a GGUF name are written as
// they are. Writes are atomic (AtomicFileWriter): a failure leaves an existing file untouched.
// Threading: any thread; no shared state.

#include "base/result.h"
#include "base/run_context.h"
#include "io/imatrix.h"

#include <string>

namespace qb::exporting {

Status writeImportanceMatrix(const io::ImportanceMatrix& m, const std::string& path, io::ImportanceFormat format,
                             RunContext* ctx = nullptr);

} // namespace qb::exporting
