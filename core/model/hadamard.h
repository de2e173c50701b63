#pragma once
// Hadamard matrices and the fast (randomized, normalised) Hadamard transform of activation rows,
// for QuaRot-style rotations (METHODS.md §5, §6.1 "Hadamard sizes").
//
// Construction: an order-n Hadamard matrix (entries ±1, H·Hᵀ = n·I) is built here as the Kronecker
// product H_n = H_p ⊗ H_m, p = 2^k (Sylvester, H_p[i][j] = (-1)^popcount(i & j)) and m a special
// order built by Paley's constructions over a finite field GF(q), q a prime power:
//   Paley I  (m = q + 1,    q ≡ 3 mod 4): H = I + S, S = [[0, 1ᵀ], [-1, Q]], Q the Jacobsthal matrix
//                                          Q[i][j] = χ(a_i - a_j), χ the quadratic character of GF(q);
//   Paley II (m = 2(q + 1), q ≡ 1 mod 4): C = [[0, 1ᵀ], [1, Q]], every 0 of C replaced by
//                                          [[1, -1], [-1, -1]] and every ±1 by ±[[1, 1], [1, -1]].
// Index i = b·m + a (b < p, a < m): H_n[i][j] = H_p[b][b'] · H_m[a][a']. The plan takes the largest
// p with a constructible m (the cheapest transform; m is capped at 1024). Of QuaRot's stored sizes
// (12, 20, 28, 36, 40, 52, 60, 108, 140, 148, 156, 172) all but 156 and 172 are built here (QuaRot
// stores those as tables of Williamson type), yet their doubles are: 312 = Paley I q=311 and
// 344 = Paley I q=343 = 7³, so LLaMA-2-7B's 11008 = 172·64 is built as 344·32. Orders with no
// construction (e.g. 172 itself, 5696 = 89·64) are refused, or, when asked, replaced by a
// block-diagonal Hadamard whose block is the largest constructible order dividing n (or a block
// size the caller picks, e.g. 128 as DuQuant/RUQuant do). The two are
// different rotations, and describe() says which one is in use.
//
// Fast transform: x <- x·Q with Q = diag(s)·H/√n (per block √B for the block-diagonal form): signs,
// then each row viewed as n/m contiguous m-wide segments times H_m (one GEMM for a chunk of rows,
// O(n·m)), then Walsh–Hadamard butterflies between the p segments of each block (O(n log p), the
// inner loop over m contiguous floats); no n×n matrix is ever formed. Randomized signs s_i = ±1
// come from std::mt19937_64(seed): s_i = -1 when the top bit of the i-th draw is set, else +1.
// Threading: a HadamardTransform is immutable; apply() parallelises over chunks of rows with
// OpenMP, with two chunk-sized scratch buffers (~128 KiB each) per thread per call. Pure std + Eigen.

#include "base/result.h"
#include "model/model.h"
#include "model/runtime.h"

#include <Eigen/Core>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qb::model {

enum class HadamardFactor { None, PaleyI, PaleyII };

// How an order-n Hadamard matrix (or its block-diagonal substitute) is built.
struct HadamardPlan {
    Eigen::Index n = 0;         // order of the whole matrix
    Eigen::Index blockSize = 0; // == n: one Hadamard; < n: block-diagonal, n / blockSize blocks of it
    Eigen::Index pow2 = 1;      // p = 2^k, the Sylvester factor of a block
    Eigen::Index special = 1;   // m, the special factor of a block (1: none)
    HadamardFactor factor = HadamardFactor::None;
    std::int64_t q = 0; // the Paley field order (prime power); 0 without a special factor
    bool blockDiagonal() const { return blockSize < n; }
    // e.g. "Hadamard 14336 (28 x 512, Paley II q=13)" or "block-diagonal Hadamard 11008 (43 blocks of
    // 256)".
    std::string describe() const;
};

// The construction of an order-n Hadamard matrix, or an error (naming n and why) where none is
// known here: n not 1, 2 or a multiple of 4, or a special factor that needs a stored matrix.
Result<HadamardPlan> planHadamard(Eigen::Index n);
// blockSize 0: planHadamard(n) when it succeeds, otherwise the block-diagonal form with the largest
// constructible block order dividing n (fails only when that is 1: n odd). blockSize > 0: blocks of
// exactly that order, which must divide n and be constructible.
Result<HadamardPlan> planBlockHadamard(Eigen::Index n, Eigen::Index blockSize = 0);
// Whether an order-m special factor (m = q + 1 or 2(q + 1), a multiple of 4) is built here.
bool isConstructibleSpecialOrder(Eigen::Index m);

// The special factor H_m (entries ±1, not normalised) of a plan; [1, 1] without one.
RowMatrix hadamardSpecialFactor(const HadamardPlan& plan);
// Rows [first, first + count) of the unnormalised ±1 matrix of a plan (zeros off the diagonal
// blocks), built entry by entry from the factors: the reference the fast transform is tested
// against. hadamardMatrix(plan) = all n rows.
RowMatrix hadamardRows(const HadamardPlan& plan, Eigen::Index first, Eigen::Index count);
inline RowMatrix hadamardMatrix(const HadamardPlan& plan) { return hadamardRows(plan, 0, plan.n); }

// In-place Walsh–Hadamard butterflies of x[0, p) (p a power of two): x <- x·H_p, unnormalised.
void walshHadamard(float* x, Eigen::Index p);

// x <- x·Q, Q = diag(s)·H/√B (orthogonal), on every row; see the header comment.
class HadamardTransform : public RowTransform {
public:
    // Deterministic signs from `seed` when given (randomized Hadamard), all +1 otherwise. Without
    // allowBlocks, an n with no construction is an error; with it, the block-diagonal form is used
    // (planBlockHadamard(n, blockSize)).
    static Result<std::shared_ptr<const HadamardTransform>> create(Eigen::Index n,
                                                                   std::optional<std::uint64_t> seed = std::nullopt,
                                                                   bool allowBlocks = false,
                                                                   Eigen::Index blockSize = 0);

    Eigen::Index size() const override { return m_plan.n; }
    void apply(Eigen::Ref<RowMatrix> rows) const override;
    std::string describe() const override;

    const HadamardPlan& plan() const { return m_plan; }
    std::optional<std::uint64_t> seed() const { return m_seed; }
    // The ±1 signs (empty when not randomized).
    const RowVector& signs() const { return m_signs; }

private:
    HadamardTransform() = default;

    HadamardPlan m_plan;
    std::optional<std::uint64_t> m_seed;
    RowVector m_signs;
    RowMatrix m_special; // H_m [m, m] (empty when m == 1)
    float m_scale = 1.f; // 1/√blockSize
};

} // namespace qb::model
