#pragma once
// CMPQ (reconstruction): channel-wise mixed-precision quantization at any fractional average
// bit-width, with non-uniform per-channel codebooks and two outlier extractors (METHODS.md §3a).
// No public code exists; every unknown is an option, and the method is labelled
// "CMPQ (reconstruction)" until it is checked against the paper.
//
// What, for a weight W [out x in] and one activation score per input channel (column):
//  1. Channel scores: CmpqChannelStats accumulates, per input channel, sum |x|, sum x² and max |x|
//     of the calibration activations (groups of sixteen rows summed in float, the groups in double),
//     or only the sums of the scores it is built for (the quantize job feeds it from the same tap
//     as the Hessian, block by block as the Hessian's products leave them in cache, for the scores
//     of the group's CMPQ tensors); score() gives mean |x|, ||x||_2, max |x| or mean x².
//  2. Activation outliers: the ceil(actOutliers * in) highest-scored channels are kept whole in F16.
//  3. Bit allocation (allocateCmpqBits): the remaining channels get levels from `levels` (default
//     {2, 3, 4}) so that the tensor's TOTAL bits (codes, F16 codebooks, outliers with their
//     indices, the per-channel level tags) stay within bits * out * in and fall short of it by
//     less than one upgrade step (at most one channel's worth: out + 16 * (2^b' - 2^b) bits).
//     Greedy by marginal gain imp_j * 4^-b per bit, imp_j the squared score (the score itself for
//     mean x²), ties broken by rank, so a higher-scored channel never gets fewer bits.
//  4. Codebooks: 2^b centroids per channel by weighted 1-D k-means (kmeans1dWeighted): values
//     sorted once, so assignment is a binary search of the midpoints per centroid and the update
//     is O(K) from prefix sums; deterministic init at weighted quantiles; stops after `kmeansIters`
//     iterations or when the objective falls by less than kmeansTol (relative). A channel with at
//     most 2^b distinct values gets them as its codebook (error 0). Centroids are stored as F16,
//     so they are rounded to F16 and the codes recomputed against the rounded codebook.
//     `uniformLevels` replaces k-means by a Min-Max uniform grid with 2^b levels (ablation).
//  5. Quantization outliers: after a trial quantization with the final allocation, the
//     floor(quantOutliers * out * in) weights with the largest error h_j * (w - q)² move to a
//     sparse F16 list (values + flat indices) and the codebooks are refitted without them. With
//     dynamic codebooks (below) the trial runs per column block on the updated weights the block's
//     codebooks are fitted to, each block taking its share of the budget by expected error mass
//     h_j * ||w_j||² * 4^-b_j; the trial's sorted values serve the refit (outliers taken out, no
//     second sort). Otherwise one trial on the original weights, over the whole tensor.
//  6. Optional GPTQ-style error feedback (errorFeedback, needs H): columns in order, each column's
//     error pushed through the upper Cholesky factor of H^-1 (as quantizeRowsGptq, lazy blocks).
//     Dynamic codebooks (default; better on the demo model at 3-3.25 bits): a block's codebooks
//     are refitted at the block's start on the weights updated by all earlier blocks; static:
//     fitted once on the original weights after the outliers are taken out (cheaper).
//     Outliers and kept channels store the updated weight in F16.
// Reconstruction: W_hat = codebook_j[code] on dense positions; at a kept channel or a sparse
// outlier the stored F16 value replaces it (exact there).
// Accounting (CmpqBits): code bits b_j per weight; 16 bits per centroid; a kept channel 16 bits per
// weight plus ceil(log2 in) bits of index; a sparse outlier 16 bits plus ceil(log2(out*in)) bits of
// flat index; ceil(log2 |levels|) bits of level tag per quantized channel.
// Element weights of the k-means: uniform, or activation energy (mean x² of the channel). With
// codebooks per input channel every element of a channel shares its channel's energy, so the two
// give the same codebook; the option exists for completeness and weighted data in tests.
// Threading: CmpqChannelStats::add splits large batches' channels over OpenMP threads (the same
// sums per channel); the solver's block updates are Eigen GEMMs on OpenMP's threads, and the
// optional ParallelFor (gptq.h) runs the per-channel k-means over channels with one scratch per
// worker (preallocated) and each column block's loop over fixed pieces of rows (as
// quantizeRowsGptq), bit-identical to serial.
// Cancel is polled between column blocks and channel batches. Inputs are never modified.
// Units/layout: W row-major float; H [in x in] double; arithmetic in double.

#include "base/result.h"
#include "base/run_context.h"
#include "quant/gptq.h"
#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace qb::quant {

enum class CmpqScore { MeanAbs, L2, MaxAbs, MeanSquare };
enum class CmpqWeights { Uniform, Energy };

std::string_view cmpqScoreId(CmpqScore s); // "mean_abs", "l2", "max_abs", "mean_sq"
bool cmpqScoreFromId(std::string_view id, CmpqScore& out);

inline constexpr double kCmpqDefaultActOutliers = 0.0;     // off: cost more bits than they gave on the demo model
inline constexpr double kCmpqDefaultQuantOutliers = 0.002; // 0.2% of weights: helped on the demo model
inline constexpr int kCmpqDefaultKmeansIters = 50;
inline constexpr double kCmpqDefaultKmeansTol = 1e-7;
inline constexpr int kCmpqKeptBits = 16; // a kept channel / a sparse outlier / a centroid: F16

struct CmpqOptions {
    double bits = 3.0;                // target average bits per weight, everything counted
    std::vector<int> levels{2, 3, 4}; // ascending, each in [1, 8]
    CmpqScore score = CmpqScore::MeanAbs;
    CmpqWeights weights = CmpqWeights::Uniform;
    bool uniformLevels = false;                       // ablation: Min-Max uniform levels instead of k-means
    double actOutliers = kCmpqDefaultActOutliers;     // fraction of channels (= of weights)
    double quantOutliers = kCmpqDefaultQuantOutliers; // fraction of weights
    bool errorFeedback = true;                        // GPTQ-style, needs H
    // With error feedback: codebooks fitted once on the original weights (static) instead of per
    // column block on the updated weights (dynamic).
    bool staticCodebooks = false;
    int kmeansIters = kCmpqDefaultKmeansIters;
    double kmeansTol = kCmpqDefaultKmeansTol;
    int blockSize = kGptqDefaultBlockSize;
    double damping = kGptqDefaultDamping;
    int maxDampingRetries = kGptqDefaultDampingRetries;
    // GPTQ's factor of this H (gptq.h) when the caller shares one (act-order off, the same damping
    // and retries; else ignored). Must outlive the call.
    const GptqFactor* factor = nullptr;
    // Else where the caller keeps GPTQ's factor between tensors on one H (sharedGptqFactor's cache:
    // reset by the caller when H changes): used when it fits, else computed into it. Must outlive
    // the call. Either way a factor CMPQ computes is made on one worker while the others fit the
    // first column block's codebooks, which need only H's diagonal; a wide one (hessian.h,
    // kBlockedFactorMin) first, its pieces on every worker.
    std::optional<GptqFactor>* factorCache = nullptr;
};
Status validateCmpqOptions(const CmpqOptions& o);
// The GPTQ factor settings of CMPQ's error feedback (natural column order, its damping and retries).
GptqOptions cmpqFeedbackOptions(const CmpqOptions& o);

inline constexpr CmpqScore kAllCmpqScores[] = {CmpqScore::MeanAbs, CmpqScore::L2, CmpqScore::MaxAbs,
                                               CmpqScore::MeanSquare};

// Per-input-channel statistics of the activations entering a linear layer.
class CmpqChannelStats {
public:
    explicit CmpqChannelStats(int cols = 0); // every score
    // Only what `scores` read is accumulated (the default mean |x| needs one sum of three).
    CmpqChannelStats(int cols, std::span<const CmpqScore> scores);
    Status add(Eigen::Ref<const MatrixXfR> x); // [tokens x cols]
    bool has(CmpqScore s) const;               // collected
    Eigen::VectorXd score(CmpqScore s) const;  // per column; empty when not collected
    std::int64_t tokens() const { return m_tokens; }
    int cols() const { return m_cols; }

private:
    int m_cols = 0;
    unsigned m_sums = 0; // which of the three sums are kept
    Eigen::VectorXd m_sumAbs, m_sumSq, m_maxAbs;
    std::int64_t m_tokens = 0;
};

// The bit budget of one tensor, split by what the bits pay for.
struct CmpqBits {
    double codes = 0, codebooks = 0, keptChannels = 0, sparseOutliers = 0, tags = 0;
    double total() const { return codes + codebooks + keptChannels + sparseOutliers + tags; }
    double overhead() const { return total() - codes; }
};

// The channel allocation: bits per input channel (0 for a kept F16 channel).
struct CmpqAllocation {
    std::vector<int> channelBits;
    std::vector<int> keptChannels; // ascending column indices
    std::int64_t sparseOutliers = 0;
    CmpqBits bits;
    double budget = 0;  // target * rows * cols
    double maxStep = 0; // the largest single upgrade cost (the "one channel's worth" bound)
};

// Level allocation for `scores` (one per column) of a [rows x cols] tensor. Errors when even the
// lowest level with the outliers exceeds the budget.
Result<CmpqAllocation> allocateCmpqBits(const Eigen::VectorXd& scores, std::int64_t rows, const CmpqOptions& opt);
// The lowest average this tensor can reach: every channel at the lowest level, with its codebook
// and tag, plus both outlier budgets.
double cmpqMinimumBitsPerWeight(std::int64_t rows, std::int64_t cols, const CmpqOptions& opt);
// Bits of the fixed parts for a given allocation (recomputes `bits`).
CmpqBits cmpqBitsOf(const std::vector<int>& channelBits, std::size_t kept, std::int64_t sparse, std::int64_t rows,
                    std::size_t levelCount);

// Weighted 1-D k-means on values sorted ascending (weights > 0 aligned with them).
struct KmeansResult {
    std::vector<double> centroids; // ascending, size k
    std::vector<double> objective; // sum w (x - c)² after each iteration (and the init as [0])
    int iterations = 0;
};
struct KmeansScratch {
    std::vector<double> cw, cwx, cwxx;  // prefix sums, size n + 1
    std::vector<double> obj[2];         // the objective after each iteration, per init
    std::vector<double> runC[2];        // each init's centroids (more than four)
    std::vector<std::size_t> runSeg[2]; // and segment starts
};
void kmeans1dWeighted(const double* sorted, const double* weights, std::size_t n, int k, int maxIters, double tol,
                      KmeansScratch& scratch, KmeansResult& out);
// The same with every point weighing `weight` (a channel's values: one weight per channel), the
// same arithmetic without a weight array. `warm` (k ascending centroids): one Lloyd run from them
// instead of the two deterministic inits (a refit after a few points left).
void kmeans1dEqualWeights(const double* sorted, double weight, std::size_t n, int k, int maxIters, double tol,
                          KmeansScratch& scratch, KmeansResult& out, const double* warm = nullptr);

// codes[i] = the index of the centroid of an ascending codebook of k <= 256 entries nearest to
// values[i] (ties to the lower one): the count of exact midpoints (cb[c] + cb[c+1]) / 2 below it,
// compared in float without rounding (the solver's assignment).
void cmpqNearestCodes(const float* values, std::size_t n, const float* codebook, int k, std::uint8_t* codes);

// A quantized CMPQ tensor as stored: codes live in QuantizedRows::codes (0 at kept channels and
// outliers), the rest here.
struct CmpqCodes {
    std::vector<std::uint8_t> channelBits;    // per column; 0 = kept channel (F16)
    std::vector<std::int64_t> codebookOffset; // per column, into codebook (size cols + 1)
    std::vector<float> codebook;              // F16-representable centroids, ascending per column
    std::vector<int> keptChannels;            // ascending
    MatrixXfR keptValues;                     // [rows x kept], F16-representable
    std::vector<std::int64_t> outlierIndex;   // flat r * cols + c, ascending
    std::vector<float> outlierValue;          // F16-representable
    std::vector<float> channelScore;          // the score that drove the allocation
    std::vector<int> levels;                  // the level set
    CmpqBits bits;
    double targetBits = 0;
    double bitsPerWeight(std::int64_t rows) const;
};

// Reconstruction (dense LUT + kept channels + sparse outliers); `codes` [rows x cols].
MatrixXfR dequantizeRowsCmpq(const MatrixU8R& codes, const CmpqCodes& c);
// Rows [r0, r0 + n) of the same into dst (n × cols, row-major), bit-identical.
// `codes`: the n × cols codes of those rows (row-major).
void dequantizeRowsCmpqInto(const std::uint8_t* codes, Eigen::Index cols, const CmpqCodes& c, Eigen::Index r0,
                            Eigen::Index n, float* dst);
// Checks sizes and ranges of stored data (for reopened projects).
Status validateCmpqCodes(const MatrixU8R& codes, const CmpqCodes& c);

// The solver. h may be empty (0x0) when errorFeedback is off; then `importance` (per column,
// e.g. diag H) weights the outlier selection, uniform when empty. scores: one per column.
// The result's `cmpq` holds the layout; `dequantized` the reconstruction; bits = max level.
Result<QuantizedRows> quantizeRowsCmpq(Eigen::Ref<const MatrixXfR> w, const Eigen::MatrixXd& h,
                                       const Eigen::VectorXd& scores, const CmpqOptions& opt, RunContext* ctx = nullptr,
                                       const ParallelFor* par = nullptr);

} // namespace qb::quant
