// Hadamard matrices and the fast randomized Hadamard transform (METHODS.md §6.2 test 21):
// H·Hᵀ = n·I for every constructible order (QuaRot's list, LLaMA widths 28·512 and 108·128, the
// block-diagonal fallback for 172·64), fast transform == dense product, orthogonality of the
// randomized transform, determinism by seed, errors for orders with no construction. LLaMA-2-7B's
// 11008 = 172·64 has a construction here (344·32, Paley I over GF(7³)); the block-diagonal fallback
// is tested on 172 and 5696 = 89·64, which have none.

#include "model/hadamard.h"

#include <QTest>

#include <cmath>
#include <random>

using namespace qb;
using namespace qb::model;

namespace {
// Fast (butterflies + m×m product) vs dense float products: both sum n terms in a different order
// (and -march=native may fuse multiply-adds), so they agree to a few float ulps of the row norm.
constexpr double kFastVsDenseRelTolerance = 1e-5;
constexpr double kOrthogonalityTolerance = 1e-5;
// Orders up to this are checked with the whole n×n product; above, 8 random rows against all n.
constexpr Eigen::Index kFullGramMaxOrder = 1024;

RowMatrix randomRows(Eigen::Index rows, Eigen::Index n, unsigned seed)
{
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, 1.f);
    RowMatrix x(rows, n);
    for (Eigen::Index i = 0; i < x.size(); ++i)
        x.data()[i] = d(rng);
    return x;
}

// x·(diag(s)·H/√B) with H built entry by entry, streamed in row blocks (no n×n matrix at once).
RowMatrix denseReference(const HadamardTransform& t, const RowMatrix& x)
{
    const HadamardPlan& plan = t.plan();
    const Eigen::Index n = plan.n, chunk = 512;
    using RowMatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    RowMatrixD xs = x.cast<double>(), y = RowMatrixD::Zero(x.rows(), n);
    if (t.signs().size() == n)
        for (Eigen::Index r = 0; r < xs.rows(); ++r)
            xs.row(r) = xs.row(r).cwiseProduct(t.signs().cast<double>());
    for (Eigen::Index r0 = 0; r0 < n; r0 += chunk) {
        const Eigen::Index c = std::min(chunk, n - r0);
        const RowMatrixD h = hadamardRows(plan, r0, c).cast<double>();
        for (Eigen::Index r = 0; r < xs.rows(); ++r) // row by row: a GEMM this flat is slow in Eigen
            y.row(r).noalias() += xs.row(r).segment(r0, c) * h;
    }
    y /= std::sqrt(double(plan.blockSize));
    return y.cast<float>();
}

struct Order {
    const char* name;
    Eigen::Index n;
    bool blocks;
};
// Every special order built here, times a few powers of two, and the LLaMA widths.
const Order kOrders[] = {
    {"1", 1, false},
    {"2", 2, false},
    {"4", 4, false},
    {"12 Paley I q=11", 12, false},
    {"20 Paley I q=19", 20, false},
    {"28 Paley I q=27 (GF(27))", 28, false},
    {"36 Paley II q=17", 36, false},
    {"40 = 20 x 2", 40, false},
    {"44 Paley I q=43", 44, false},
    {"52 Paley II q=25 (GF(25))", 52, false},
    {"60 Paley I q=59", 60, false},
    {"108 Paley I q=107", 108, false},
    {"140 Paley I q=139", 140, false},
    {"148 Paley II q=73", 148, false},
    {"24 = 12 x 2", 24, false},
    {"352 = 44 x 8", 352, false},
    {"1280 = 20 x 64", 1280, false},
    {"2048 Sylvester", 2048, false},
    {"LLaMA-3-8B 14336 = 28 x 512", 14336, false},
    {"LLaMA-2-13B 13824 = 108 x 128", 13824, false},
    {"LLaMA-2-7B 11008 = 344 x 32 (Paley I q=7^3)", 11008, false},
    {"172 (no construction), block-diagonal 43 x 4", 172, true},
    {"5696 = 89 x 64, block-diagonal 89 x 64", 5696, true},
};

} // namespace

class TestHadamard : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void gramIsNI_data()
    {
        QTest::addColumn<qlonglong>("n");
        QTest::addColumn<bool>("blocks");
        for (const Order& o : kOrders)
            QTest::newRow(o.name) << qlonglong(o.n) << o.blocks;
    }
    // H·Hᵀ = n·I (per block: blockSize·I, zero across blocks) in exact arithmetic: the entries are
    // ±1 and the sums are integers below 2^24, so float is exact here.
    void gramIsNI()
    {
        QFETCH(qlonglong, n);
        QFETCH(bool, blocks);
        auto plan = blocks ? planBlockHadamard(n) : planHadamard(n);
        QVERIFY2(plan.ok(), plan.ok() ? "" : plan.error().toString().c_str());
        QCOMPARE(plan->n, Eigen::Index(n));
        QCOMPARE(plan->blockDiagonal(), blocks);
        QCOMPARE(plan->blockSize, plan->pow2 * plan->special);
        const RowMatrix hm = hadamardSpecialFactor(*plan);
        QCOMPARE(hm.rows(), plan->special);
        QVERIFY((hm.array().abs() == 1.f).all());
        QVERIFY(((hm * hm.transpose()) - double(plan->special) * RowMatrix::Identity(hm.rows(), hm.rows())).isZero(0));
        const Eigen::Index b = plan->blockSize;
        auto expected = [&](Eigen::Index i, Eigen::Index j) { return i == j ? float(b) : 0.f; };
        if (n <= kFullGramMaxOrder) {
            const RowMatrix h = hadamardMatrix(*plan);
            for (Eigen::Index i = 0; i < n; ++i)
                for (Eigen::Index j = 0; j < n; ++j)
                    QVERIFY(std::abs(h(i, j)) == 1.f || (blocks && h(i, j) == 0.f));
            const RowMatrix g = h * h.transpose();
            for (Eigen::Index i = 0; i < n; ++i)
                for (Eigen::Index j = 0; j < n; ++j)
                    if (g(i, j) != expected(i, j))
                        QFAIL(qPrintable(QString("G(%1,%2) = %3").arg(i).arg(j).arg(g(i, j))));
            return;
        }
        std::mt19937 rng(5);
        RowMatrix sample(8, n);
        std::vector<Eigen::Index> rows(8);
        for (std::size_t s = 0; s < rows.size(); ++s) {
            rows[s] = Eigen::Index(rng() % std::uint64_t(n));
            sample.row(Eigen::Index(s)) = hadamardRows(*plan, rows[s], 1);
        }
        for (Eigen::Index r0 = 0; r0 < n; r0 += 512) {
            const Eigen::Index c = std::min<Eigen::Index>(512, n - r0);
            const RowMatrix h = hadamardRows(*plan, r0, c);
            if (!blocks) QVERIFY((h.array().abs() == 1.f).all());
            for (Eigen::Index s = 0; s < sample.rows(); ++s)
                for (Eigen::Index j = 0; j < c; ++j) {
                    const float g = h.row(j).dot(sample.row(s));
                    if (g != expected(rows[std::size_t(s)], r0 + j))
                        QFAIL(qPrintable(QString("G(%1,%2) = %3").arg(rows[std::size_t(s)]).arg(r0 + j).arg(g)));
                }
        }
    }

    // QuaRot ships 12, 20, 28, 36, 40, 52, 60, 108, 140, 148, 156, 172 as stored tables; here every
    // one but 156 and 172 is constructed (those need Williamson-type matrices).
    void quaRotSizes()
    {
        for (Eigen::Index m : {12, 20, 28, 36, 40, 52, 60, 108, 140, 148})
            QVERIFY2(planHadamard(m).ok(), qPrintable(QString::number(m)));
        for (Eigen::Index m : {156, 172}) {
            auto p = planHadamard(m);
            QVERIFY(!p.ok());
            QCOMPARE(p.error().code, ErrorCode::Unsupported);
        }
        QVERIFY(isConstructibleSpecialOrder(44));
        QVERIFY(!isConstructibleSpecialOrder(40)); // built as 20 x 2
        QCOMPARE(planHadamard(40)->special, Eigen::Index(20));
        QCOMPARE(planHadamard(14336)->special, Eigen::Index(28));
        QCOMPARE(planHadamard(14336)->pow2, Eigen::Index(512));
        QCOMPARE(planHadamard(13824)->special, Eigen::Index(108));
    }

    void errorsForOrdersWithoutConstruction()
    {
        for (Eigen::Index n : {172, 5696}) {
            auto t = HadamardTransform::create(n, 0);
            QVERIFY(!t.ok());
            QCOMPARE(t.error().code, ErrorCode::Unsupported);
            QVERIFY2(t.error().message.find(std::to_string(n)) != std::string::npos, t.error().message.c_str());
            QVERIFY2(t.error().message.find("block-diagonal") != std::string::npos, t.error().message.c_str());
        }
        for (Eigen::Index n : {0, -4, 6, 7, 18, 92})
            QVERIFY2(!HadamardTransform::create(n).ok(), qPrintable(QString::number(n)));
        QVERIFY(!HadamardTransform::create(7, 1, true).ok());          // odd: not even block-diagonally
        QVERIFY(!HadamardTransform::create(11008, 1, true, 100).ok()); // 100 does not divide 11008
        QVERIFY(!HadamardTransform::create(344, 1, true, 172).ok());   // 172 has no construction
        auto blocks = HadamardTransform::create(5696, 3, true);
        QVERIFY(blocks.ok());
        QCOMPARE((*blocks)->plan().blockSize, Eigen::Index(64));
        QCOMPARE((*blocks)->describe(),
                 std::string("block-diagonal Hadamard 5696 (89 blocks of 64), randomized seed 3"));
        QCOMPARE((*HadamardTransform::create(14336))->describe(),
                 std::string("Hadamard 14336 (28 x 512, Paley I q=27)"));
        QCOMPARE((*HadamardTransform::create(11008))->describe(),
                 std::string("Hadamard 11008 (344 x 32, Paley I q=343)"));
        // The block size can be chosen (DuQuant/RUQuant's B = 128) even where a full one exists.
        auto b128 = HadamardTransform::create(11008, 0, true, 128);
        QVERIFY(b128.ok());
        QCOMPARE((*b128)->describe(),
                 std::string("block-diagonal Hadamard 11008 (86 blocks of 128), randomized seed 0"));
    }

    void fastEqualsDense_data()
    {
        QTest::addColumn<qlonglong>("n");
        QTest::addColumn<bool>("blocks");
        QTest::addColumn<bool>("randomized");
        for (const Order& o : kOrders) {
            if (o.n <= 4096) // the large orders once (randomized): the dense reference costs seconds
                QTest::newRow((std::string(o.name) + ", plain").c_str()) << qlonglong(o.n) << o.blocks << false;
            QTest::newRow((std::string(o.name) + ", randomized").c_str()) << qlonglong(o.n) << o.blocks << true;
        }
    }
    void fastEqualsDense()
    {
        QFETCH(qlonglong, n);
        QFETCH(bool, blocks);
        QFETCH(bool, randomized);
        auto t = HadamardTransform::create(n, randomized ? std::optional<std::uint64_t>(11) : std::nullopt, blocks);
        QVERIFY(t.ok());
        const RowMatrix x = randomRows(n > 4096 ? 2 : 9, n, 2);
        RowMatrix fast = x;
        (*t)->apply(fast);
        const RowMatrix ref = denseReference(**t, x);
        for (Eigen::Index r = 0; r < x.rows(); ++r) {
            const double rel = (fast.row(r) - ref.row(r)).norm() / ref.row(r).norm();
            QVERIFY2(rel < kFastVsDenseRelTolerance, qPrintable(QString("row %1: %2").arg(r).arg(rel)));
            // Orthogonal: the norm is kept.
            QVERIFY(std::abs(fast.row(r).norm() / x.row(r).norm() - 1.0) < kOrthogonalityTolerance);
        }
    }

    // Q = apply(I) is orthogonal (Q·Qᵀ = I) for the randomized transform, plain and block-diagonal.
    void randomizedIsOrthogonal_data()
    {
        QTest::addColumn<qlonglong>("n");
        QTest::addColumn<bool>("blocks");
        QTest::newRow("96 = 12 x 8") << 96ll << false;
        QTest::newRow("148") << 148ll << false;
        QTest::newRow("256") << 256ll << false;
        QTest::newRow("1280 = 20 x 64") << 1280ll << false;
        QTest::newRow("1536, blocks of 12 x 16 = 192") << 1536ll << true;
    }
    void randomizedIsOrthogonal()
    {
        QFETCH(qlonglong, n);
        QFETCH(bool, blocks);
        auto t = HadamardTransform::create(n, 42, blocks, blocks ? 192 : 0);
        QVERIFY(t.ok());
        RowMatrix q = RowMatrix::Identity(n, n);
        (*t)->apply(q);
        const double err = (q * q.transpose() - RowMatrix::Identity(n, n)).cwiseAbs().maxCoeff();
        QVERIFY2(err < kOrthogonalityTolerance, qPrintable(QString::number(err)));
        // Random signs really flip columns: some of each sign.
        QVERIFY((*t)->signs().minCoeff() == -1.f && (*t)->signs().maxCoeff() == 1.f);
    }

    void determinismBySeed()
    {
        auto a = HadamardTransform::create(1280, 7), b = HadamardTransform::create(1280, 7),
             c = HadamardTransform::create(1280, 8);
        QVERIFY(a.ok() && b.ok() && c.ok());
        QVERIFY((*a)->signs() == (*b)->signs());
        QVERIFY((*a)->signs() != (*c)->signs());
        // The documented stream: sign i is -1 where the top bit of the i-th mt19937_64 draw is set.
        std::mt19937_64 rng(7);
        for (Eigen::Index i = 0; i < 1280; ++i)
            QCOMPARE((*a)->signs()[i], (rng() >> 63) ? -1.f : 1.f);
        const RowMatrix x = randomRows(5, 1280, 9);
        RowMatrix ya = x, yb = x, yc = x;
        (*a)->apply(ya);
        (*b)->apply(yb);
        (*c)->apply(yc);
        QVERIFY(ya == yb);
        QVERIFY(!(ya - yc).isZero(1e-3f));
        QCOMPARE((*a)->seed().value(), std::uint64_t(7));
        QVERIFY((*a)->describe().find("seed 7") != std::string::npos);
    }

    // Per-head rotations are applied to column blocks of a wider row-major matrix (outer stride
    // larger than the width): the result must equal applying to a compact copy.
    void appliesToColumnBlocks()
    {
        auto t = HadamardTransform::create(24, 1);
        QVERIFY(t.ok());
        const RowMatrix x = randomRows(7, 72, 4);
        RowMatrix inPlace = x;
        for (Eigen::Index c0 = 0; c0 < 72; c0 += 24)
            (*t)->apply(inPlace.middleCols(c0, 24));
        for (Eigen::Index c0 = 0; c0 < 72; c0 += 24) {
            RowMatrix copy = x.middleCols(c0, 24);
            (*t)->apply(copy);
            QVERIFY(inPlace.middleCols(c0, 24) == copy);
        }
    }
};

QTEST_GUILESS_MAIN(TestHadamard)
#include "tst_hadamard.moc"
