#pragma once
// Orthogonal operation lists: transforms composed of elementary reflections, rotations and
// permutations, applied to activation rows without ever forming a matrix (RUQuant, METHODS.md
// §4(a), §4(d) "structured").
//
// An OrthoOpList acts on vectors of n values. Each op, applied in order to a vector v (in place):
//   Householder  v <- v - 2 (v·u) u                  u a unit vector (P = I - 2uuᵀ, P = Pᵀ, P² = I)
//   Givens       (v_2i, v_2i+1) <- (c_i v_2i - s_i v_2i+1, s_i v_2i + c_i v_2i+1) for every pair i
//                                                    (c_i² + s_i² = 1; n even)
//   Permute      v'_i = v_perm[i]                    (a bijection of [0, n))
// The list is the matrix R = op_last ··· op_1 acting on column vectors; on a row vector x (an
// activation row) it computes x·Rᵀ, so as a RowTransform (x <- x·T) T = Rᵀ and dense() = Rᵀ.
// Cost O(n) per op and vector (a list of m ops: O(m·n), against O(n²) for a dense product).
// Parameters are kept in double (building, tests) and in float (the runtime's rows).
//
// RowTransforms built on it (model/runtime.h): BlockOpTransform (one list shared by every
// n-wide block of a C-wide row: RUQuant's blockdiag(R)), PermutationTransform and
// HouseholderTransform over the full width (the zig-zag permutation, the global reflection), and
// ChainTransform (several transforms one after the other: T = T_1·T_2···).
// Threading: immutable after construction; apply() parallelises over chunks of rows with OpenMP.
// Pure std + Eigen.

#include "model/model.h"
#include "model/runtime.h"

#include <Eigen/Core>

#include <memory>
#include <string>
#include <vector>

namespace qb::model {

struct OrthoOp {
    enum class Kind { Householder, Givens, Permute };
    Kind kind = Kind::Householder;
    Eigen::VectorXd u; // Householder: unit vector
    Eigen::VectorXf uf;
    std::vector<double> c, s; // Givens: one (c, s) per pair (2i, 2i + 1)
    std::vector<float> cf, sf;
    std::vector<int> perm; // Permute: v'_i = v_perm[i]

    // From ω (any norm > 0; normalised here); an all-zero ω is an error for the caller to avoid.
    static OrthoOp householder(const Eigen::VectorXd& omega);
    static OrthoOp givens(std::vector<double> c, std::vector<double> s);
    static OrthoOp permutation(std::vector<int> perm);
};

class OrthoOpList {
public:
    explicit OrthoOpList(Eigen::Index n = 0) : m_n(n) {}
    Eigen::Index size() const { return m_n; }
    const std::vector<OrthoOp>& ops() const { return m_ops; }
    // Appends op (its size must be n; asserted).
    void push(OrthoOp op);
    // In place on one vector of n values.
    void apply(double* v) const;
    void apply(float* v) const;
    // On `count` consecutive vectors of n values (rows of a row-major [count, n] block), chunked
    // so every op passes over a cache-resident chunk; parallel over chunks.
    void applyMany(float* data, Eigen::Index count) const;
    void applyMany(double* data, Eigen::Index count) const;
    // R (acting on column vectors) in double: column j = apply(e_j).
    Eigen::MatrixXd matrix() const;
    // Counts per kind, e.g. "16 reflections, 48 Givens layers, 48 permutations".
    std::string describeOps() const;

private:
    Eigen::Index m_n;
    std::vector<OrthoOp> m_ops;
};

// blockdiag(R) on C-wide rows: the list (size B) applied to every B-wide block; B must divide C.
// Application: Dense (the default) multiplies the block vectors by Rᵀ materialised once from the
// list (one [rows·C/B, B] x [B, B] GEMM: the runtime's path, several times faster than walking a
// list of ~100 ops per vector, see the closing notes of issue 15); OpList walks the list.
class BlockOpTransform : public RowTransform {
public:
    enum class Apply { Dense, OpList };
    BlockOpTransform(Eigen::Index width, std::shared_ptr<const OrthoOpList> ops, std::string label,
                     Apply mode = Apply::Dense);
    Eigen::Index size() const override { return m_width; }
    void apply(Eigen::Ref<RowMatrix> rows) const override;
    void applyTranspose(Eigen::Ref<RowMatrix> rows) const override; // blocks times R (dense)
    std::string describe() const override { return m_label; }
    const OrthoOpList& ops() const { return *m_ops; }
    Apply mode() const { return m_mode; }

private:
    Eigen::Index m_width;
    std::shared_ptr<const OrthoOpList> m_ops;
    std::string m_label;
    Apply m_mode;
    RowMatrix m_rt; // [B, B] Rᵀ in float (Dense)
};

class PermutationTransform : public RowTransform {
public:
    PermutationTransform(std::vector<int> perm, std::string label); // x'_i = x_perm[i]
    Eigen::Index size() const override { return Eigen::Index(m_perm.size()); }
    void apply(Eigen::Ref<RowMatrix> rows) const override;
    void applyTranspose(Eigen::Ref<RowMatrix> rows) const override; // x'_perm[i] = x_i
    std::string describe() const override { return m_label; }
    const std::vector<int>& permutation() const { return m_perm; }

private:
    std::vector<int> m_perm;
    std::string m_label;
};

// x <- x - 2 (x·u) uᵀ over the full width; u = ω / ‖ω‖.
class HouseholderTransform : public RowTransform {
public:
    HouseholderTransform(const Eigen::VectorXd& omega, std::string label);
    Eigen::Index size() const override { return m_u.size(); }
    void apply(Eigen::Ref<RowMatrix> rows) const override;
    void applyTranspose(Eigen::Ref<RowMatrix> rows) const override { apply(rows); } // symmetric
    std::string describe() const override { return m_label; }
    const Eigen::VectorXd& omega() const { return m_omega; }

private:
    Eigen::VectorXd m_omega;
    Eigen::VectorXf m_u;
    std::string m_label;
};

// T = T_1·T_2···T_k: the parts applied in order (all of one size).
class ChainTransform : public RowTransform {
public:
    // label: what describe() says ("" joins the parts' labels with " · ").
    explicit ChainTransform(std::vector<std::shared_ptr<const RowTransform>> parts, std::string label = {});
    Eigen::Index size() const override;
    void apply(Eigen::Ref<RowMatrix> rows) const override;
    void applyTranspose(Eigen::Ref<RowMatrix> rows) const override; // the parts' transposes, reversed
    std::string describe() const override;
    const std::vector<std::shared_ptr<const RowTransform>>& parts() const { return m_parts; }

private:
    std::vector<std::shared_ptr<const RowTransform>> m_parts;
    std::string m_label;
};

} // namespace qb::model
