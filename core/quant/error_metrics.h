#pragma once
// Output-error metrics of a quantised linear layer on calibration data.
//
// What: relative output error ||(W - Q) X^T||_F / ||W X^T||_F from the inputs X, or the same
// quantity through the Hessian proxy: sqrt(tr(dW H dW^T) / tr(W H W^T)) (equal when H = X^T X / N
// up to the common factor; the square root makes both a ratio of norms).
// Threading: pure functions; their GEMMs run on Eigen's OpenMP team. Layout: W, Q row-major [out x in]; X row-major
// [tokens x in]; H [in x in]. Accumulation in double. Returns 0 when the reference output is 0
// and the error is 0, +inf when only the reference is 0.

#include "quant/uniform_grid.h"

#include <Eigen/Core>

namespace qb::quant {

double relativeOutputError(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q, Eigen::Ref<const MatrixXfR> x);
double relativeOutputErrorHessian(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                                  Eigen::Ref<const Eigen::MatrixXd> h);
// tr(dW H dW^T), the GPTQ objective (not normalised).
double hessianErrorTrace(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                         Eigen::Ref<const Eigen::MatrixXd> h);

// Both traces at once (the quantize job reports the relative error and the proxy loss): the
// error trace tr(dW H dW^T) and the reference tr(W H W^T), each computed once.
struct HessianErrors {
    double errorTrace = 0, referenceTrace = 0;
    double relative() const; // sqrt(errorTrace / referenceTrace), as relativeOutputErrorHessian
};
HessianErrors hessianErrors(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                            Eigen::Ref<const Eigen::MatrixXd> h);
// The same for a solver's result: its own error trace when it has one (QuantizedRows::errorTrace,
// GPTQ and CMPQ: exact to rounding, O(rows x cols) instead of a second rows x cols^2 product); else
// (RTN, whose errors do not cancel against H) the error trace in float GEMM tiles summed in double,
// as the reference trace.
HessianErrors hessianErrors(Eigen::Ref<const MatrixXfR> w, const QuantizedRows& q, Eigen::Ref<const Eigen::MatrixXd> h);

// tr(W H W^T), the reference of the relative error: float GEMM tiles summed in double (about 1e-6
// relative; nothing in an unquantized W cancels against H by design). hessianErrorTrace, for any
// dW (small by cancellation after GPTQ), is in double.
double hessianReferenceTrace(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const Eigen::MatrixXd> h);

} // namespace qb::quant
