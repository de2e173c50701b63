#include "model/ortho_ops.h"

#include <omp.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>

namespace qb::model {

OrthoOp OrthoOp::householder(const Eigen::VectorXd& omega)
{
    OrthoOp op;
    op.kind = Kind::Householder;
    const double norm = omega.norm();
    op.u = norm > 0 ? Eigen::VectorXd(omega / norm) : omega;
    op.uf = op.u.cast<float>();
    return op;
}

OrthoOp OrthoOp::givens(std::vector<double> c, std::vector<double> s)
{
    OrthoOp op;
    op.kind = Kind::Givens;
    op.c = std::move(c);
    op.s = std::move(s);
    op.cf.assign(op.c.begin(), op.c.end());
    op.sf.assign(op.s.begin(), op.s.end());
    return op;
}

OrthoOp OrthoOp::permutation(std::vector<int> perm)
{
    OrthoOp op;
    op.kind = Kind::Permute;
    op.perm = std::move(perm);
    return op;
}

namespace {

[[maybe_unused]] Eigen::Index opSize(const OrthoOp& op)
{
    switch (op.kind) {
    case OrthoOp::Kind::Householder: return op.u.size();
    case OrthoOp::Kind::Givens: return Eigen::Index(2 * op.c.size());
    case OrthoOp::Kind::Permute: return Eigen::Index(op.perm.size());
    }
    return 0;
}

template <typename T>
const T* uOf(const OrthoOp& op)
{
    if constexpr (std::is_same_v<T, float>) return op.uf.data();
    else return op.u.data();
}
template <typename T>
const std::vector<T>& cOf(const OrthoOp& op)
{
    if constexpr (std::is_same_v<T, float>) return op.cf;
    else return op.c;
}
template <typename T>
const std::vector<T>& sOf(const OrthoOp& op)
{
    if constexpr (std::is_same_v<T, float>) return op.sf;
    else return op.s;
}

// One op on `count` vectors of n values; `scratch` holds n values (permutations).
template <typename T>
void applyOp(const OrthoOp& op, T* data, Eigen::Index count, Eigen::Index n, T* scratch)
{
    switch (op.kind) {
    case OrthoOp::Kind::Householder: {
        const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>> u(uOf<T>(op), n);
        for (Eigen::Index r = 0; r < count; ++r) {
            Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> v(data + r * n, n);
            const T d = T(2) * v.dot(u);
            v.noalias() -= d * u;
        }
        break;
    }
    case OrthoOp::Kind::Givens: {
        const T* c = cOf<T>(op).data();
        const T* s = sOf<T>(op).data();
        const Eigen::Index pairs = n / 2;
        for (Eigen::Index r = 0; r < count; ++r) {
            T* v = data + r * n;
            for (Eigen::Index i = 0; i < pairs; ++i) {
                const T a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = c[i] * a - s[i] * b;
                v[2 * i + 1] = s[i] * a + c[i] * b;
            }
        }
        break;
    }
    case OrthoOp::Kind::Permute: {
        const int* p = op.perm.data();
        for (Eigen::Index r = 0; r < count; ++r) {
            T* v = data + r * n;
            for (Eigen::Index i = 0; i < n; ++i)
                scratch[i] = v[p[i]];
            std::copy(scratch, scratch + n, v);
        }
        break;
    }
    }
}

template <typename T>
void applyList(const std::vector<OrthoOp>& ops, T* data, Eigen::Index count, Eigen::Index n)
{
    if (n <= 0 || count <= 0 || ops.empty()) return;
    // About 32 KiB of vectors per chunk: every op of the list runs over a chunk that stays in L1/L2.
    const Eigen::Index chunk = std::max<Eigen::Index>(1, (32768 / Eigen::Index(sizeof(T))) / n);
    const Eigen::Index chunks = (count + chunk - 1) / chunk;
#pragma omp parallel if (chunks > 1)
    {
        std::vector<T> scratch(static_cast<std::size_t>(n));
#pragma omp for schedule(static)
        for (Eigen::Index k = 0; k < chunks; ++k) {
            const Eigen::Index first = k * chunk, m = std::min(chunk, count - first);
            for (const OrthoOp& op : ops)
                applyOp(op, data + first * n, m, n, scratch.data());
        }
    }
}

} // namespace

void OrthoOpList::push(OrthoOp op)
{
    assert(opSize(op) == m_n);
    m_ops.push_back(std::move(op));
}

void OrthoOpList::apply(double* v) const
{
    std::vector<double> scratch(static_cast<std::size_t>(m_n));
    for (const OrthoOp& op : m_ops)
        applyOp(op, v, 1, m_n, scratch.data());
}

void OrthoOpList::apply(float* v) const
{
    std::vector<float> scratch(static_cast<std::size_t>(m_n));
    for (const OrthoOp& op : m_ops)
        applyOp(op, v, 1, m_n, scratch.data());
}

void OrthoOpList::applyMany(float* data, Eigen::Index count) const { applyList(m_ops, data, count, m_n); }
void OrthoOpList::applyMany(double* data, Eigen::Index count) const { applyList(m_ops, data, count, m_n); }

Eigen::MatrixXd OrthoOpList::matrix() const
{
    // Rows of a row-major identity are the e_j; transformed in place they are the columns of R.
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> e =
        Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>::Identity(m_n, m_n);
    applyMany(e.data(), m_n);
    return e.transpose();
}

std::string OrthoOpList::describeOps() const
{
    int h = 0, g = 0, p = 0;
    for (const OrthoOp& op : m_ops)
        (op.kind == OrthoOp::Kind::Householder ? h : op.kind == OrthoOp::Kind::Givens ? g : p) += 1;
    return std::to_string(h) + " reflections, " + std::to_string(g) + " Givens layers, " + std::to_string(p) +
           " permutations";
}

// ---- RowTransforms ------------------------------------------------------------------------------

BlockOpTransform::BlockOpTransform(Eigen::Index width, std::shared_ptr<const OrthoOpList> ops, std::string label,
                                   Apply mode)
    : m_width(width), m_ops(std::move(ops)), m_label(std::move(label)), m_mode(mode)
{
    assert(m_ops && m_ops->size() > 0 && width % m_ops->size() == 0);
    // x_block <- x_block·Rᵀ: the matrix R rounded to float once.
    if (m_mode == Apply::Dense) m_rt = m_ops->matrix().transpose().cast<float>();
}

namespace {
// blocks <- blocks * m, a chunk of block vectors at a time through `scratch` (reused across calls;
// at most 1M entries, in cache), never a copy of the whole matrix: a model's weights or a batch's
// activations.
void multiplyBlocksInPlace(Eigen::Map<RowMatrix> blocks, const RowMatrix& m, RowMatrix& scratch)
{
    const Eigen::Index total = blocks.rows(), b = blocks.cols();
    const Eigen::Index chunk = std::min(total, std::max<Eigen::Index>(1, (Eigen::Index(1) << 20) / b));
    if (scratch.rows() < chunk || scratch.cols() != b) scratch.resize(chunk, b);
    for (Eigen::Index i = 0; i < total; i += chunk) {
        const Eigen::Index cnt = std::min(chunk, total - i);
        scratch.topRows(cnt) = blocks.middleRows(i, cnt);
        blocks.middleRows(i, cnt).noalias() = scratch.topRows(cnt) * m;
    }
}
} // namespace

void BlockOpTransform::apply(Eigen::Ref<RowMatrix> rows) const
{
    const Eigen::Index b = m_ops->size(), perRow = rows.cols() / b;
    if (m_mode == Apply::Dense) {
        RowMatrix scratch;
        if (rows.outerStride() == rows.cols())
            multiplyBlocksInPlace(Eigen::Map<RowMatrix>(rows.data(), rows.rows() * perRow, b), m_rt, scratch);
        else
            for (Eigen::Index r = 0; r < rows.rows(); ++r)
                multiplyBlocksInPlace(Eigen::Map<RowMatrix>(rows.row(r).data(), perRow, b), m_rt, scratch);
        return;
    }
    if (rows.outerStride() == rows.cols()) {
        m_ops->applyMany(rows.data(), rows.rows() * perRow);
        return;
    }
    for (Eigen::Index r = 0; r < rows.rows(); ++r)
        m_ops->applyMany(rows.row(r).data(), perRow);
}

void BlockOpTransform::applyTranspose(Eigen::Ref<RowMatrix> rows) const
{
    const RowMatrix r = m_mode == Apply::Dense ? RowMatrix(m_rt.transpose()) : RowMatrix(m_ops->matrix().cast<float>());
    const Eigen::Index b = m_ops->size(), perRow = rows.cols() / b;
    RowMatrix scratch;
    for (Eigen::Index i = 0; i < rows.rows(); ++i)
        multiplyBlocksInPlace(Eigen::Map<RowMatrix>(rows.row(i).data(), perRow, b), r, scratch);
}

PermutationTransform::PermutationTransform(std::vector<int> perm, std::string label)
    : m_perm(std::move(perm)), m_label(std::move(label))
{}

namespace {
// Every row permuted in place: gather (x'_i = x_perm[i]) or its inverse, scatter (x'_perm[i] = x_i).
void permuteRows(Eigen::Ref<RowMatrix> rows, const std::vector<int>& perm, bool inverse)
{
    const Eigen::Index n = rows.rows(), k = rows.cols();
#pragma omp parallel
    {
        std::vector<float> tmp(static_cast<std::size_t>(k));
#pragma omp for schedule(static)
        for (Eigen::Index r = 0; r < n; ++r) {
            float* v = rows.row(r).data();
            for (Eigen::Index i = 0; i < k; ++i) {
                const std::size_t p = std::size_t(perm[std::size_t(i)]);
                if (inverse) tmp[p] = v[i];
                else tmp[std::size_t(i)] = v[p];
            }
            std::copy(tmp.begin(), tmp.end(), v);
        }
    }
}
} // namespace

void PermutationTransform::apply(Eigen::Ref<RowMatrix> rows) const { permuteRows(rows, m_perm, false); }

void PermutationTransform::applyTranspose(Eigen::Ref<RowMatrix> rows) const { permuteRows(rows, m_perm, true); }

HouseholderTransform::HouseholderTransform(const Eigen::VectorXd& omega, std::string label)
    : m_omega(omega), m_u((omega / omega.norm()).cast<float>()), m_label(std::move(label))
{}

void HouseholderTransform::apply(Eigen::Ref<RowMatrix> rows) const
{
    const Eigen::VectorXf d = 2.0f * (rows * m_u);
    rows.noalias() -= d * m_u.transpose();
}

ChainTransform::ChainTransform(std::vector<std::shared_ptr<const RowTransform>> parts, std::string label)
    : m_parts(std::move(parts)), m_label(std::move(label))
{}

Eigen::Index ChainTransform::size() const { return m_parts.empty() ? 0 : m_parts.front()->size(); }

void ChainTransform::apply(Eigen::Ref<RowMatrix> rows) const
{
    for (const auto& p : m_parts)
        p->apply(rows);
}

void ChainTransform::applyTranspose(Eigen::Ref<RowMatrix> rows) const
{
    for (auto it = m_parts.rbegin(); it != m_parts.rend(); ++it)
        (*it)->applyTranspose(rows);
}

std::string ChainTransform::describe() const
{
    if (!m_label.empty()) return m_label;
    std::string out;
    for (const auto& p : m_parts)
        out += (out.empty() ? "" : " · ") + p->describe();
    return out;
}

} // namespace qb::model
