#pragma once
// Trainable uniform grids with frozen codes: the dequantised weight as a function of its per-group
// parameters, and the chain rule from a dense weight gradient to those parameters (NeUQI's
// lightweight distillation, METHODS.md §2(a)).
//
// Convention (uniform_grid.h, the one internal form): ŵ[r, j] = s·(z + q[r, j]) − b with
// (s, z, b) = (scales, zeros, offsets)(r, groupIndex[j]), q the frozen code. Hence
//   ∂ŵ/∂s = z + q,   ∂ŵ/∂z = s,   ∂ŵ/∂b = −1,
// so dL/ds[r, g] = Σ_{j∈g} dW[r, j]·(z + q[r, j]), dL/dz = s·Σ_{j∈g} dW[r, j], dL/db = −Σ dW.
// (The "zero" of GPTQ-style formats is Z = −z: ∂ŵ/∂Z = −s, as NeUQI's custom backward.)
// Threading: pure functions, single-threaded. Arithmetic: parameters in double; the dense
// gradient in its own scalar (float in training, double in the finite-difference tests).

#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <vector>

namespace qb::quant {

// ŵ as S ([rows x cols]): the dequantised weight of codes under scales/zeros(/offsets, may be empty).
template <typename S>
void dequantizeRowsUniformAs(const MatrixU8R& codes, const MatrixXdR& scales, const MatrixXdR& zeros,
                             const MatrixXdR& offsets, const std::vector<int>& groupIndex,
                             Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& out)
{
    out.resize(codes.rows(), codes.cols());
    const bool hasOffset = offsets.size() > 0;
    for (Eigen::Index r = 0; r < codes.rows(); ++r)
        for (Eigen::Index j = 0; j < codes.cols(); ++j) {
            const int g = groupIndex[std::size_t(j)];
            double v = scales(r, g) * (zeros(r, g) + double(codes(r, j)));
            if (hasOffset) v -= offsets(r, g);
            out(r, j) = S(v);
        }
}

// Adds dL/ds, dL/dz (and dL/db when dOffset) of every group into dScale, dZero(, dOffset)
// ([rows x groups], sized by the caller) from the dense gradient dW ([rows x cols]).
template <typename Derived>
void fakeQuantGradsUniform(const MatrixU8R& codes, const MatrixXdR& scales, const MatrixXdR& zeros,
                           const std::vector<int>& groupIndex, const Eigen::MatrixBase<Derived>& dW, MatrixXdR& dScale,
                           MatrixXdR& dZero, MatrixXdR* dOffset = nullptr)
{
    for (Eigen::Index r = 0; r < codes.rows(); ++r)
        for (Eigen::Index j = 0; j < codes.cols(); ++j) {
            const int g = groupIndex[std::size_t(j)];
            const double d = double(dW(r, j));
            dScale(r, g) += d * (zeros(r, g) + double(codes(r, j)));
            dZero(r, g) += d * scales(r, g);
            if (dOffset) (*dOffset)(r, g) -= d;
        }
}

} // namespace qb::quant
