#include "model/hadamard.h"

#include <omp.h>

#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <random>

namespace qb::model {

namespace {

// Special factors larger than this are not built: the dense m×m table and the O(n·m) product
// would cost more than they save.
constexpr Eigen::Index kMaxSpecialOrder = 1024;

// q = p^e with p prime: {p, e}; {0, 0} when q is not a prime power.
std::pair<std::int64_t, int> primePower(std::int64_t q)
{
    if (q < 2) return {0, 0};
    std::int64_t p = 0;
    for (std::int64_t d = 2; d * d <= q; ++d)
        if (q % d == 0) {
            p = d;
            break;
        }
    if (p == 0) return {q, 1};
    int e = 0;
    while (q % p == 0) {
        q /= p;
        ++e;
    }
    return q == 1 ? std::pair<std::int64_t, int>{p, e} : std::pair<std::int64_t, int>{0, 0};
}

bool isPrimePower(std::int64_t q) { return primePower(q).first != 0; }

// Which Paley construction builds order m (a multiple of 4), and its field order.
std::pair<HadamardFactor, std::int64_t> paleyFor(Eigen::Index m)
{
    if (m < 4 || m % 4 != 0 || m > kMaxSpecialOrder) return {HadamardFactor::None, 0};
    if (isPrimePower(m - 1) && (m - 1) % 4 == 3) return {HadamardFactor::PaleyI, m - 1};
    if (m % 2 == 0 && isPrimePower(m / 2 - 1) && (m / 2 - 1) % 4 == 1) return {HadamardFactor::PaleyII, m / 2 - 1};
    return {HadamardFactor::None, 0};
}

// GF(q), q = p^e: elements are integers in [0, q) whose base-p digits are the coefficients of a
// polynomial in α, reduced modulo a monic irreducible polynomial of degree e (found by search).
class FiniteField {
public:
    explicit FiniteField(std::int64_t q) : m_q(q)
    {
        const auto [p, e] = primePower(q);
        m_p = p;
        m_e = e;
        if (m_e > 1) findModulus();
    }

    std::int64_t sub(std::int64_t a, std::int64_t b) const
    {
        if (m_e == 1) return ((a - b) % m_p + m_p) % m_p;
        std::int64_t r = 0, w = 1;
        for (int i = 0; i < m_e; ++i, a /= m_p, b /= m_p, w *= m_p)
            r += (((a % m_p) - (b % m_p) + m_p) % m_p) * w;
        return r;
    }

    std::int64_t mul(std::int64_t a, std::int64_t b) const
    {
        if (m_e == 1) return (a * b) % m_p;
        // q <= kMaxSpecialOrder < 2^11, so e <= 10: fixed arrays, no allocation.
        std::array<std::int64_t, 10> x{}, y{};
        std::array<std::int64_t, 19> prod{};
        for (int i = 0; i < m_e; ++i, a /= m_p, b /= m_p) {
            x[std::size_t(i)] = a % m_p;
            y[std::size_t(i)] = b % m_p;
        }
        for (int i = 0; i < m_e; ++i)
            for (int j = 0; j < m_e; ++j)
                prod[std::size_t(i + j)] = (prod[std::size_t(i + j)] + x[std::size_t(i)] * y[std::size_t(j)]) % m_p;
        // Reduce with α^e = -Σ f_i α^i (f monic).
        for (int d = 2 * m_e - 2; d >= m_e; --d) {
            const std::int64_t c = prod[std::size_t(d)];
            if (c == 0) continue;
            prod[std::size_t(d)] = 0;
            for (int i = 0; i < m_e; ++i)
                prod[std::size_t(d - m_e + i)] =
                    ((prod[std::size_t(d - m_e + i)] - c * m_modulus[std::size_t(i)]) % m_p + m_p) % m_p;
        }
        std::int64_t r = 0;
        for (int i = m_e - 1; i >= 0; --i)
            r = r * m_p + prod[std::size_t(i)];
        return r;
    }

    // χ(a): 0 for a = 0, +1 for a non-zero square, -1 otherwise.
    std::vector<int> quadraticCharacter() const
    {
        std::vector<int> chi(std::size_t(m_q), -1);
        chi[0] = 0;
        for (std::int64_t x = 1; x < m_q; ++x)
            chi[std::size_t(mul(x, x))] = 1;
        return chi;
    }

private:
    // The first monic f of degree e (low coefficients counted up) for which GF(p)[α]/f has no zero
    // divisors, i.e. f is irreducible. q stays small (kMaxSpecialOrder), so O(q²) per try is cheap.
    void findModulus()
    {
        m_modulus.assign(std::size_t(m_e), 0);
        for (std::int64_t code = 1; code < m_q; ++code) {
            std::int64_t c = code;
            for (int i = 0; i < m_e; ++i, c /= m_p)
                m_modulus[std::size_t(i)] = c % m_p;
            if (m_modulus[0] == 0) continue; // α divides f
            if (m_e <= 3) {                  // degree <= 3: irreducible iff f has no root in GF(p)
                bool root = false;
                for (std::int64_t x = 0; x < m_p && !root; ++x) {
                    std::int64_t v = 1; // Horner, leading coefficient 1
                    for (int i = m_e - 1; i >= 0; --i)
                        v = (v * x + m_modulus[std::size_t(i)]) % m_p;
                    root = v == 0;
                }
                if (!root) return;
                continue;
            }
            bool field = true;
            for (std::int64_t a = 1; a < m_q && field; ++a)
                for (std::int64_t b = a; b < m_q; ++b)
                    if (mul(a, b) == 0) {
                        field = false;
                        break;
                    }
            if (field) return;
        }
        assert(false && "an irreducible polynomial exists for every degree");
    }

    std::int64_t m_q, m_p = 0;
    int m_e = 0;
    std::vector<std::int64_t> m_modulus; // f = α^e + Σ m_modulus[i] α^i
};

RowMatrix paleyMatrix(HadamardFactor kind, std::int64_t q)
{
    const FiniteField f(q);
    const std::vector<int> chi = f.quadraticCharacter();
    auto jacobsthal = [&](std::int64_t i, std::int64_t j) { return float(chi[std::size_t(f.sub(i, j))]); };
    const Eigen::Index c = Eigen::Index(q) + 1;
    if (kind == HadamardFactor::PaleyI) {
        RowMatrix h(c, c);
        h(0, 0) = 1;
        for (Eigen::Index j = 1; j < c; ++j) {
            h(0, j) = 1;
            h(j, 0) = -1;
        }
        for (Eigen::Index i = 1; i < c; ++i)
            for (Eigen::Index j = 1; j < c; ++j)
                h(i, j) = (i == j ? 1.f : 0.f) + jacobsthal(i - 1, j - 1);
        return h;
    }
    // Paley II: the symmetric conference matrix C, then the 2×2 substitution.
    RowMatrix conf = RowMatrix::Zero(c, c);
    for (Eigen::Index j = 1; j < c; ++j)
        conf(0, j) = conf(j, 0) = 1;
    for (Eigen::Index i = 1; i < c; ++i)
        for (Eigen::Index j = 1; j < c; ++j)
            conf(i, j) = jacobsthal(i - 1, j - 1);
    RowMatrix h(2 * c, 2 * c);
    for (Eigen::Index i = 0; i < c; ++i)
        for (Eigen::Index j = 0; j < c; ++j) {
            const float v = conf(i, j);
            if (v == 0) {
                h(2 * i, 2 * j) = 1, h(2 * i, 2 * j + 1) = -1;
                h(2 * i + 1, 2 * j) = -1, h(2 * i + 1, 2 * j + 1) = -1;
            } else {
                h(2 * i, 2 * j) = v, h(2 * i, 2 * j + 1) = v;
                h(2 * i + 1, 2 * j) = v, h(2 * i + 1, 2 * j + 1) = -v;
            }
        }
    return h;
}

float sylvester(Eigen::Index i, Eigen::Index j) { return (std::popcount(std::uint64_t(i & j)) & 1) ? -1.f : 1.f; }

std::string noConstruction(Eigen::Index n, const std::string& why)
{
    return "no Hadamard matrix of order " + std::to_string(n) + " is built here: " + why;
}

} // namespace

bool isConstructibleSpecialOrder(Eigen::Index m) { return paleyFor(m).first != HadamardFactor::None; }

std::string HadamardPlan::describe() const
{
    std::string block = std::to_string(blockSize);
    if (special > 1) {
        block += " (" + std::to_string(special) + " x " + std::to_string(pow2) + ", Paley " +
                 (factor == HadamardFactor::PaleyI ? "I" : "II") + " q=" + std::to_string(q) + ")";
    }
    if (!blockDiagonal()) return "Hadamard " + block;
    return "block-diagonal Hadamard " + std::to_string(n) + " (" + std::to_string(n / blockSize) + " blocks of " +
           block + ")";
}

Result<HadamardPlan> planHadamard(Eigen::Index n)
{
    if (n <= 0) return makeError(ErrorCode::InvalidArgument, noConstruction(n, "the order must be positive"));
    Eigen::Index p = 1;
    while (n % (2 * p) == 0)
        p *= 2;
    if (p == n) return HadamardPlan{n, n, p, 1, HadamardFactor::None, 0};
    if (p < 4)
        return makeError(ErrorCode::Unsupported,
                         noConstruction(n, "Hadamard orders are 1, 2 or multiples of 4 (" + std::to_string(n) + " = " +
                                               std::to_string(n / p) + " x " + std::to_string(p) + ")"));
    // The largest power of two whose cofactor has a Paley construction: the cheapest transform.
    for (Eigen::Index pow2 = p; pow2 >= 1; pow2 /= 2) {
        const Eigen::Index m = n / pow2;
        const auto [kind, q] = paleyFor(m);
        if (kind != HadamardFactor::None) return HadamardPlan{n, n, pow2, m, kind, q};
    }
    return makeError(ErrorCode::Unsupported,
                     noConstruction(n, std::to_string(n) + " = " + std::to_string(n / p) + " x " + std::to_string(p) +
                                           ", and no order " + std::to_string(n / p) +
                                           " x 2^j is q+1 (q ≡ 3 mod 4) "
                                           "or 2(q+1) (q ≡ 1 mod 4) for a prime power q (QuaRot stores such "
                                           "matrices, e.g. 156 and 172, as tables); use the block-diagonal form"));
}

Result<HadamardPlan> planBlockHadamard(Eigen::Index n, Eigen::Index blockSize)
{
    if (blockSize > 0) {
        if (n <= 0 || n % blockSize != 0)
            return makeError(ErrorCode::InvalidArgument, "the Hadamard block size " + std::to_string(blockSize) +
                                                             " does not divide the order " + std::to_string(n));
        auto block = planHadamard(blockSize);
        if (!block.ok()) return block.error();
        block->n = n;
        return block;
    }
    auto full = planHadamard(n);
    if (full.ok() || n <= 0) return full;
    for (Eigen::Index d = n / 2; d >= 2; --d) { // the largest divisor first
        if (n % d != 0) continue;
        auto p = planHadamard(d);
        if (!p.ok()) continue;
        p->n = n;
        return p;
    }
    return makeError(ErrorCode::Unsupported, noConstruction(n, "not even block-diagonally: no divisor of " +
                                                                   std::to_string(n) + " above 1 is a Hadamard order"));
}

RowMatrix hadamardSpecialFactor(const HadamardPlan& plan)
{
    if (plan.special <= 1) return RowMatrix::Ones(1, 1);
    return paleyMatrix(plan.factor, plan.q);
}

RowMatrix hadamardRows(const HadamardPlan& plan, Eigen::Index first, Eigen::Index count)
{
    const RowMatrix hm = hadamardSpecialFactor(plan);
    const Eigen::Index p = plan.pow2, m = plan.special, b = plan.blockSize;
    RowMatrix out = RowMatrix::Zero(count, plan.n);
    for (Eigen::Index r = 0; r < count; ++r) {
        const Eigen::Index i = first + r, block = i / b, ib = i % b;
        // Row i of H_p ⊗ H_m: row ib % m of H_m times each entry of row ib / m of H_p.
        for (Eigen::Index j = 0; j < p; ++j)
            out.row(r).segment(block * b + j * m, m) = sylvester(ib / m, j) * hm.row(ib % m);
    }
    return out;
}

void walshHadamard(float* x, Eigen::Index p)
{
    for (Eigen::Index h = 1; h < p; h *= 2)
        for (Eigen::Index i = 0; i < p; i += 2 * h)
            for (Eigen::Index j = i; j < i + h; ++j) {
                const float a = x[j], c = x[j + h];
                x[j] = a + c;
                x[j + h] = a - c;
            }
}

namespace {

// x <- (H_p ⊗ I_m)·x on a block of p·m values: butterflies between whole m-wide segments (the
// inner loop runs over m contiguous floats, so it vectorises).
void walshHadamardSegments(float* x, Eigen::Index p, Eigen::Index m)
{
    for (Eigen::Index h = 1; h < p; h *= 2)
        for (Eigen::Index i = 0; i < p; i += 2 * h)
            for (Eigen::Index j = i; j < i + h; ++j) {
                float* u = x + j * m;
                float* v = x + (j + h) * m;
                for (Eigen::Index t = 0; t < m; ++t) {
                    const float a = u[t], c = v[t];
                    u[t] = a + c;
                    v[t] = a - c;
                }
            }
}

// Rows per chunk of apply(): about this many floats per scratch buffer.
constexpr Eigen::Index kChunkFloats = 1 << 15;

} // namespace

Result<std::shared_ptr<const HadamardTransform>> HadamardTransform::create(Eigen::Index n,
                                                                           std::optional<std::uint64_t> seed,
                                                                           bool allowBlocks, Eigen::Index blockSize)
{
    auto plan = allowBlocks ? planBlockHadamard(n, blockSize) : planHadamard(n);
    if (!plan.ok()) return plan.error();
    std::shared_ptr<HadamardTransform> t(new HadamardTransform());
    t->m_plan = *plan;
    t->m_seed = seed;
    if (seed) {
        std::mt19937_64 rng(*seed);
        t->m_signs.resize(n);
        for (Eigen::Index i = 0; i < n; ++i)
            t->m_signs[i] = (rng() >> 63) ? -1.f : 1.f;
    }
    if (t->m_plan.special > 1) t->m_special = hadamardSpecialFactor(t->m_plan);
    t->m_scale = float(1.0 / std::sqrt(double(t->m_plan.blockSize)));
    return std::shared_ptr<const HadamardTransform>(std::move(t));
}

std::string HadamardTransform::describe() const
{
    return m_plan.describe() + (m_seed ? ", randomized seed " + std::to_string(*m_seed) : "");
}

void HadamardTransform::apply(Eigen::Ref<RowMatrix> rows) const
{
    assert(rows.cols() == m_plan.n);
    const Eigen::Index n = m_plan.n, p = m_plan.pow2, m = m_plan.special, b = m_plan.blockSize;
    // At most kChunkFloats per chunk, and at least one chunk per thread when there are rows enough.
    const Eigen::Index nRows = rows.rows(), threads = omp_get_max_threads();
    const Eigen::Index chunk = std::max<Eigen::Index>(
        1, std::min(kChunkFloats / n, (nRows + threads - 1) / std::max<Eigen::Index>(1, threads)));
    const Eigen::Index nChunks = (nRows + chunk - 1) / chunk;
    const bool randomized = m_signs.size() == n;
    // Always inside a parallel region (of one thread for one chunk): there Eigen's GEMM stays
    // single-threaded, as a small GEMM forked over threads costs more than it saves.
#pragma omp parallel num_threads(int(std::min(nChunks, threads)))
    {
        RowMatrix in, out; // [c, n] scratch, reallocated only when c changes
#pragma omp for schedule(static)
        for (Eigen::Index ci = 0; ci < nChunks; ++ci) {
            const Eigen::Index r0 = ci * chunk, c = std::min(chunk, nRows - r0);
            auto block = rows.middleRows(r0, c);
            if (m == 1) { // in place: signs, butterflies, scale
                for (Eigen::Index r = 0; r < c; ++r) {
                    float* x = block.row(r).data();
                    if (randomized)
                        for (Eigen::Index i = 0; i < n; ++i)
                            x[i] *= m_signs[i];
                    for (Eigen::Index b0 = 0; b0 < n; b0 += b)
                        walshHadamard(x + b0, p);
                    for (Eigen::Index i = 0; i < n; ++i)
                        x[i] *= m_scale;
                }
                continue;
            }
            in.resize(c, n);
            if (randomized) in.noalias() = block * m_signs.asDiagonal();
            else in = block;
            // Every row is n/m contiguous m-wide segments: X·H_m for all of them in one GEMM.
            out.resize(c, n);
            Eigen::Map<RowMatrix> segments(in.data(), c * (n / m), m), result(out.data(), c * (n / m), m);
            result.noalias() = segments * m_special;
            for (Eigen::Index r = 0; r < c; ++r)
                for (Eigen::Index b0 = 0; b0 < n; b0 += b)
                    walshHadamardSegments(out.row(r).data() + b0, p, m);
            block = out * m_scale;
        }
    }
}

} // namespace qb::model
