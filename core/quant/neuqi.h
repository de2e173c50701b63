#pragma once
// NeUQI: near-optimal uniform quantisation parameters per group (METHODS.md §2).
//
// What: for one group of weights w_j with diagonal-Hessian weights h_j (the diagonal of the
// *damped* H), a coarse-to-fine search over the scale (64 coarse steps s_mm*i/64, then 32 fine
// steps s_c + s_mm*j/2048, j = -16..16, j != 0) where each scale gets a real-valued zero-point
// from a two-stage solver: the global minimum of a piecewise-quadratic surrogate (in-range
// rounding error replaced by 1/4), then an exact breakpoint sweep of the true loss on
// [z_hat - 1, z_hat + 1]. Score = l * s^2 with weights a_j = h_j / sum h. A Min-Max guard
// (METHODS.md §6.1) keeps the Min-Max pair when it scores better under the same proxy; we guard
// with both the plain §0 pair and the reference-GPTQ asymmetric pair, so NeUQI is never worse
// than either Min-Max on the diagonal proxy.
//
// Threading: free functions; all scratch lives in a caller-owned NeuqiScratch (one per thread),
// so nothing allocates once the scratch has grown to the largest group.
// Units: u = w / s (grid steps); z in grid steps (offset form, see uniform_grid.h); scales in
// weight units. Layout: contiguous arrays of one group's values.

#include "quant/uniform_grid.h"

#include <vector>

namespace qb::quant {

struct NeuqiOptions {
    int coarseSteps = 64;  // T_c (grid_mid_tot_steps)
    int totalSteps = 2048; // T (grid_tot_steps): fine steps of s_mm/T, T/T_c of them in total
    bool minMaxGuard = true;
};

struct ZeroPointSolution {
    double zero = 0.0; // real z, offset form
    double loss = 0.0; // sum a_j (u_j - z - clamp(round(u_j - z)))^2, with the a_j as given
};

struct NeuqiScratch {
    struct Breakpoint {
        double z;
        int j;
    };
    std::vector<int> order;
    std::vector<double> ws, as, u, c;
    std::vector<Breakpoint> bps;
    void reserve(int n);
};

// The zero-point for a fixed scale. `u` must be sorted ascending (dividing by s > 0 keeps the
// order of the sorted weights); `a` are non-negative weights aligned with u (need not sum to 1).
ZeroPointSolution solveZeroPointNeuqi(const double* u, const double* a, int n, int levels, NeuqiScratch& scratch);
// Stage 1 alone: the minimiser of the surrogate g(z) >= f(z).
double surrogateZeroPointNeuqi(const double* u, const double* a, int n, int levels);

inline double neuqiCoarseScale(double sMm, int i, const NeuqiOptions& o)
{
    return sMm * double(i) / double(o.coarseSteps);
}
inline double neuqiFineScale(double sCoarse, double sMm, int j, const NeuqiOptions& o)
{
    return sCoarse + sMm * double(j) / double(o.totalSteps);
}
// s_mm of METHODS.md §2 step 2: (max-min)/(L-1), 1 when below 1e-9.
double neuqiMinMaxScale(const double* w, int n, int levels);

// Fits (s, z) for one group. h may be null (uniform weights). Writes the diagonal proxy loss
// (groupLossUniform) to *loss when given.
GroupParams fitGroupNeuqi(const double* w, const double* h, int n, int bits, const NeuqiOptions& opts,
                          NeuqiScratch& scratch, double* loss = nullptr);

} // namespace qb::quant
