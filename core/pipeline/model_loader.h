#pragma once
// Model loading: converts an opened io::Checkpoint into model::Model F32 weights.
//
// Every tensor goes through io::readTensorF32 (F16/BF16/GGUF blocks dequantized, GGUF q/k rows
// un-permuted), is shape-checked against the config, and scanned for NaN/Inf: a non-finite value
// is a warning naming the tensor (the model still loads; evaluation will show the damage).
// Progress: stage "load", one unit per tensor; cancel is polled between tensors and returns
// ErrorCode::Cancelled. Memory: the whole model is held in F32 (or packed, LoadOptions::compact), or, with loadLayers = false,
// only the embedding, final norm and lm_head (decoder layers then come one at a time through
// loadDecoderLayer). Threading: runs on the calling thread; the checkpoint is read-only.

#include "base/result.h"
#include "base/run_context.h"
#include "io/checkpoint.h"
#include "model/model.h"

#include <memory>
#include <string>
#include <vector>

namespace qb::pipeline {

struct LoadWarning {
    std::string type;   // "non-finite"
    std::string tensor; // HF tensor name
    std::string detail; // e.g. "3 NaN, 0 Inf of 16384 values"
    std::string toString() const { return type + ": " + tensor + ": " + detail; }
};

struct LoadOptions {
    bool loadLayers = true;
    // Linear weights, embedding and head stay in their stored encoding where it has a row view
    // (F32/F16/BF16, GGUF blocks; io::packTensor) as packed views into the map, decoded per tile
    // by the forward pass (model/model.h); norms and biases are read to F32. Memory: about the
    // file size, mapped, instead of an F32 copy. Still scanned for NaN/Inf.
    bool compact = false;
};

Result<std::shared_ptr<model::Model>> loadModel(const io::Checkpoint& checkpoint, RunContext* ctx = nullptr,
                                                std::vector<LoadWarning>* warnings = nullptr,
                                                const LoadOptions& options = {});

// Every decoder layer of the checkpoint into `model` (e.g. one loaded with loadLayers = false),
// replacing what it holds; progress stage "load", one unit per tensor. Cancel leaves the layers
// loaded so far in place.
Status loadDecoderLayers(const io::Checkpoint& checkpoint, model::Model& model, RunContext* ctx = nullptr,
                         std::vector<LoadWarning>* warnings = nullptr, bool compact = false);

// One decoder layer's weights (for layer-at-a-time pipelines); no progress stage of its own.
Result<std::shared_ptr<model::DecoderLayerWeights>> loadDecoderLayer(const io::Checkpoint& checkpoint, int layer,
                                                                     std::vector<LoadWarning>* warnings = nullptr);

// The inverse of loading: a Checkpoint that describes `model`'s own F32 values under the names of
// `names` (same architecture and shapes), held in memory, so that the exporters, which read
// checkpoints, write a model transformed in memory (a rotated or smoothed run: its embedding,
// norms, biases and head differ from the file it came from). A tied embedding that the model has
// untied (its own lm_head) gets an lm_head.weight entry and config.tieWordEmbeddings = false.
// Refused (Unsupported, saying why) for Gemma norms (stored as 1 + w) and Phi-3's fused
// projections. Memory: one more F32 copy of every tensor.
Result<io::Checkpoint> checkpointOverModel(const io::Checkpoint& names, const model::Model& model);

} // namespace qb::pipeline
