// KL divergence and top-token agreement (eval/kl_divergence.h): the per-position kernel against a
// plain double softmax loop, the streaming statistics against exact ones (the histogram median and
// p99 within their stated 1 %), a model against itself (KL 0, top-1 100 %), two synthetic models
// against a reference computed from whole-text logits, the perplexity it reports against
// evaluatePerplexity, progress and cancel, and live heap memory that does not grow with the text.

#include "eval/kl_divergence.h"
#include "model/forward.h"
#include "quant_test_models.h"

#include <QTest>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

using namespace qb;
using namespace qb::eval;

namespace {

// The kernel and the plain loop both work in double on the same float logits.
constexpr double kKernelAbsTolerance = 1e-12;
constexpr double kKernelRelTolerance = 1e-9;
// Whole-text logits (one GEMM over every row) and the streaming pass's chunks of scored rows are
// blocked differently, so float logits differ in their last bits (FMA, vector width).
constexpr double kPassRelTolerance = 1e-4;
// What the header promises for the histogram's median and p99.
constexpr double kQuantileRelTolerance = 0.01;

struct Plain {
    double kl = 0;
    double refLogProb = 0, logProb = 0;
    bool sameTop1 = false;
};

// Softmax and KL written out, nothing shared with the code under test.
Plain plainCompare(const float* ref, const float* q, int V, int target)
{
    auto logSoftmax = [V](const float* l) {
        double mx = l[0];
        for (int j = 1; j < V; ++j)
            mx = std::max(mx, double(l[j]));
        double s = 0;
        for (int j = 0; j < V; ++j)
            s += std::exp(double(l[j]) - mx);
        std::vector<double> out(static_cast<std::size_t>(V));
        for (int j = 0; j < V; ++j)
            out[std::size_t(j)] = double(l[j]) - mx - std::log(s);
        return out;
    };
    const auto lp = logSoftmax(ref), lq = logSoftmax(q);
    Plain r;
    for (int j = 0; j < V; ++j)
        r.kl += std::exp(lp[std::size_t(j)]) * (lp[std::size_t(j)] - lq[std::size_t(j)]);
    r.refLogProb = lp[std::size_t(target)];
    r.logProb = lq[std::size_t(target)];
    r.sameTop1 = std::max_element(ref, ref + V) - ref == std::max_element(q, q + V) - q;
    return r;
}

bool near(double a, double b, double rel, double abs = 0)
{
    return std::abs(a - b) <= abs + rel * std::max(std::abs(a), std::abs(b));
}

// llama.cpp's percentile: linear interpolation at rank q·(n-1) of the sorted values.
double exactQuantile(std::vector<double> v, double q)
{
    std::sort(v.begin(), v.end());
    const double r = q * double(v.size() - 1);
    const auto k = std::size_t(r);
    if (k + 1 >= v.size()) return v.back();
    return v[k] + (r - double(k)) * (v[k + 1] - v[k]);
}

TokenWindows randomWindows(int count, int ctx, int vocab, unsigned seed)
{
    std::mt19937 rng(seed);
    TokenWindows w;
    w.ctx = ctx;
    w.count = count;
    w.ids.resize(std::size_t(count) * std::size_t(ctx));
    for (auto& id : w.ids)
        id = std::int32_t(rng() % unsigned(vocab));
    return w;
}

// The synthetic model with every decoder weight perturbed by relative noise `scale`, as a
// quantizer would.
std::shared_ptr<model::Model> perturbed(const model::Model& m, float scale, unsigned seed)
{
    auto out = std::make_shared<model::Model>(m);
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.f, 1.f);
    for (int l = 0; l < m.numLayers(); ++l) {
        auto w = std::make_shared<model::DecoderLayerWeights>(*m.layer(l));
        for (model::Linear lin : model::kAllLinears) {
            auto& mat = w->weight(lin);
            for (Eigen::Index i = 0; i < mat.size(); ++i)
                mat.data()[i] *= 1.f + scale * n(rng);
        }
        out->setLayer(l, std::move(w));
    }
    return out;
}

// Heap bytes in use (all arenas and mmapped chunks), or -1 without glibc.
qint64 heapInUse()
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    const struct mallinfo2 m = mallinfo2();
    return qint64(m.uordblks + m.hblkhd);
#else
    return -1;
#endif
}

} // namespace

class TestKlDivergence : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    void kernelMatchesPlainLoop_data()
    {
        QTest::addColumn<QString>("kind");
        QTest::addColumn<int>("vocab");
        for (const QString& kind : {QStringLiteral("identical"), QStringLiteral("shifted"), QStringLiteral("random"),
                                    QStringLiteral("peaked"), QStringLiteral("far")})
            for (int v : {2, 7, 2048})
                QTest::addRow("%s V=%d", qPrintable(kind), v) << kind << v;
    }
    void kernelMatchesPlainLoop()
    {
        QFETCH(QString, kind);
        QFETCH(int, vocab);
        std::mt19937 rng(11 + unsigned(vocab));
        std::normal_distribution<float> n(0.f, 1.f);
        std::vector<float> ref(static_cast<std::size_t>(vocab)), q(static_cast<std::size_t>(vocab));
        for (int j = 0; j < vocab; ++j) {
            ref[std::size_t(j)] = 3.f * n(rng);
            q[std::size_t(j)] = ref[std::size_t(j)];
        }
        if (kind == "shifted") // the same distribution: KL 0
            for (auto& x : q)
                x += 5.f;
        if (kind == "random")
            for (auto& x : q)
                x += 0.3f * n(rng);
        if (kind == "peaked") {
            ref[0] += 30.f;
            for (auto& x : q)
                x += 0.01f * n(rng);
        }
        if (kind == "far")
            for (auto& x : q)
                x = -x;
        const int target = vocab / 2;
        const TokenComparison c = compareNextToken(ref, q, target);
        const Plain p = plainCompare(ref.data(), q.data(), vocab, target);
        QVERIFY2(near(c.kl, std::max(0.0, p.kl), kKernelRelTolerance, kKernelAbsTolerance),
                 qPrintable(QStringLiteral("KL %1 vs plain %2").arg(c.kl, 0, 'g', 17).arg(p.kl, 0, 'g', 17)));
        QVERIFY(c.kl >= 0);
        // The log-probabilities are floats, rounded once.
        QVERIFY(near(c.refLogProb, p.refLogProb, 1e-6, 1e-6));
        QVERIFY(near(c.logProb, p.logProb, 1e-6, 1e-6));
        QCOMPARE(c.sameTop1, p.sameTop1);
        if (kind == "identical" || kind == "shifted") {
            QVERIFY(c.kl < 1e-12);
            QVERIFY(c.sameTop1);
        }
        if (kind == "identical") QCOMPARE(c.kl, 0.0);
    }

    // The log-sum-exp goes through Eigen's vectorised exp in chunks of 512: rows shorter and longer
    // than a chunk (and than a vector) match std::exp term by term; a NaN logit makes it NaN, a -inf
    // one adds nothing.
    void rowLogSoftmaxMatchesPlainLoop()
    {
        std::mt19937 rng(5);
        std::normal_distribution<float> n(0.f, 4.f);
        for (int v : {1, 3, 8, 17, 511, 512, 513, 1500, 32000}) {
            std::vector<float> l(static_cast<std::size_t>(v));
            for (float& x : l)
                x = n(rng);
            const model::RowLogSoftmax r = model::rowLogSoftmax(l);
            const float mx = *std::max_element(l.begin(), l.end());
            QCOMPARE(r.max, mx);
            QCOMPARE(l[std::size_t(r.argmax)], mx);
            double sum = 0;
            for (float x : l)
                sum += std::exp(double(x) - double(mx));
            QVERIFY2(
                near(r.logSum, std::log(sum), 1e-13, 1e-15),
                qPrintable(
                    QStringLiteral("V=%1: %2 vs %3").arg(v).arg(r.logSum, 0, 'g', 17).arg(std::log(sum), 0, 'g', 17)));
            if (v < 3) continue;
            std::vector<float> withInf = l;
            withInf[std::size_t(v / 2)] = -INFINITY;
            double sumInf = 0;
            for (float x : withInf)
                sumInf += std::exp(double(x) - double(mx));
            const model::RowLogSoftmax ri = model::rowLogSoftmax(withInf);
            QVERIFY(std::isfinite(ri.logSum) && near(ri.logSum, std::log(sumInf), 1e-13, 1e-15));
            std::vector<float> withNan = l;
            withNan[std::size_t(v - 2)] = NAN;
            QVERIFY(std::isnan(model::rowLogSoftmax(withNan).logSum));
        }
    }

    void accumulatorMatchesExactStatistics_data()
    {
        QTest::addColumn<QString>("distribution");
        QTest::addColumn<int>("count");
        for (const QString& d : {QStringLiteral("log-uniform"), QStringLiteral("exponential"), QStringLiteral("zeros"),
                                 QStringLiteral("tiny and large")})
            for (int n : {1, 2, 101, 200000})
                QTest::addRow("%s n=%d", qPrintable(d), n) << d << n;
    }
    void accumulatorMatchesExactStatistics()
    {
        QFETCH(QString, distribution);
        QFETCH(int, count);
        std::mt19937_64 rng(5);
        std::uniform_real_distribution<double> u(0, 1);
        std::exponential_distribution<double> e(20.0);
        std::vector<double> v(static_cast<std::size_t>(count));
        std::int64_t same = 0;
        KlAccumulator acc;
        for (int i = 0; i < count; ++i) {
            double x = 0;
            if (distribution == "log-uniform") x = std::pow(10.0, -8 + 9 * u(rng));
            else if (distribution == "exponential") x = e(rng);
            else if (distribution == "tiny and large") x = i % 3 == 0 ? 1e-14 * u(rng) : (i % 3 == 1 ? 50.0 : 0.5);
            const bool s = u(rng) < 0.9;
            same += s;
            v[std::size_t(i)] = x;
            acc.add(x, s);
        }
        const KlStats st = acc.stats();
        QCOMPARE(st.tokens, qint64(count));
        double sum = 0, sum2 = 0;
        for (double x : v) {
            sum += x;
            sum2 += x * x;
        }
        const double n = count, mean = sum / n;
        QVERIFY(near(st.mean, mean, 1e-12, 1e-300));
        if (count > 1) {
            const double stderrExpected = std::sqrt(std::max(0.0, sum2 / n - mean * mean) / (n - 1));
            QVERIFY(near(st.meanStderr, stderrExpected, 1e-9, 1e-300));
            const double p = double(same) / n;
            QVERIFY(near(st.top1AgreementStderr, std::sqrt(p * (1 - p) / (n - 1)), 1e-12, 1e-300));
        }
        QVERIFY(near(st.top1Agreement, double(same) / n, 1e-15));
        QCOMPARE(st.max, *std::max_element(v.begin(), v.end()));
        const double median = exactQuantile(v, 0.5), p99 = exactQuantile(v, 0.99);
        // Values under 1e-12 nats share one bin: there the promise is absolute.
        QVERIFY2(near(st.median, median, kQuantileRelTolerance, 1e-12),
                 qPrintable(QStringLiteral("median %1, exact %2").arg(st.median).arg(median)));
        QVERIFY2(near(st.p99, p99, kQuantileRelTolerance, 1e-12),
                 qPrintable(QStringLiteral("p99 %1, exact %2").arg(st.p99).arg(p99)));
        // Constant memory: a fixed-size object, whatever was added.
        static_assert(sizeof(KlAccumulator) < 64 * 1024);
    }

    void modelAgainstItselfIsZero_data()
    {
        QTest::addColumn<int>("mode");
        QTest::newRow("all") << int(ScoreMode::All);
        QTest::newRow("second-half") << int(ScoreMode::SecondHalf);
    }
    void modelAgainstItselfIsZero()
    {
        QFETCH(int, mode);
        const auto m = qbtest::syntheticModel(2);
        const TokenWindows w = randomWindows(5, 16, 64, 3);
        PerplexityOptions o;
        o.mode = ScoreMode(mode);
        o.batch = 2;
        auto r = evaluateKlDivergence(*m, *m, w, o);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(r->kl.mean, 0.0);
        QCOMPARE(r->kl.max, 0.0);
        QCOMPARE(r->kl.median, 0.0);
        QCOMPARE(r->kl.p99, 0.0);
        QCOMPARE(r->kl.top1Agreement, 1.0);
        const int first = firstScoredPosition(o.mode, w.ctx);
        QCOMPARE(r->kl.tokens, qint64(w.count) * (w.ctx - 1 - first));
        QCOMPARE(r->kl.referencePerplexity, r->perplexity.perplexity);
        // The perplexity of the paired pass is evaluatePerplexity's.
        auto ppl = evaluatePerplexity(*m, w, o);
        QVERIFY(ppl.ok());
        QCOMPARE(r->perplexity.perplexity, ppl->perplexity);
        QCOMPARE(r->perplexity.tokensScored, ppl->tokensScored);
    }

    void matchesWholeTextReference_data()
    {
        QTest::addColumn<int>("mode");
        QTest::addColumn<double>("noise");
        for (double noise : {0.02, 0.3})
            for (int mode : {int(ScoreMode::All), int(ScoreMode::SecondHalf)})
                QTest::addRow("%s noise %.2f", scoreModeName(ScoreMode(mode)), noise) << mode << noise;
    }
    void matchesWholeTextReference()
    {
        QFETCH(int, mode);
        QFETCH(double, noise);
        const auto ref = qbtest::syntheticModel(2);
        const auto q = perturbed(*ref, float(noise), 17);
        const TokenWindows w = randomWindows(7, 12, 64, 9);
        PerplexityOptions o;
        o.mode = ScoreMode(mode);
        o.batch = 3; // the last batch is partial
        auto r = evaluateKlDivergence(*q, *ref, w, o);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());

        // Reference: the logits of every position of the whole text, then the plain loop.
        model::Workspace ws;
        auto lr = model::forwardLogits(*ref, w.ids, w.ctx, ws);
        auto lq = model::forwardLogits(*q, w.ids, w.ctx, ws);
        QVERIFY(lr.ok() && lq.ok());
        const int V = int(lr->cols()), first = firstScoredPosition(o.mode, w.ctx);
        std::vector<double> kls;
        double nllRef = 0, nllQ = 0;
        int same = 0;
        for (int b = 0; b < w.count; ++b)
            for (int t = first; t < w.ctx - 1; ++t) {
                const Eigen::Index row = Eigen::Index(b) * w.ctx + t;
                const Plain p = plainCompare(lr->row(row).data(), lq->row(row).data(), V, w.ids[std::size_t(row + 1)]);
                kls.push_back(p.kl);
                nllRef -= p.refLogProb;
                nllQ -= p.logProb;
                same += p.sameTop1;
            }
        const double n = double(kls.size());
        double mean = 0, mx = 0;
        for (double k : kls) {
            mean += k / n;
            mx = std::max(mx, k);
        }
        QCOMPARE(r->kl.tokens, qint64(kls.size()));
        QVERIFY2(near(r->kl.mean, mean, kPassRelTolerance),
                 qPrintable(QStringLiteral("mean KL %1, reference %2").arg(r->kl.mean).arg(mean)));
        QVERIFY(mean > (noise > 0.1 ? 1e-2 : 1e-5)); // the case is not trivial
        QVERIFY(near(r->kl.max, mx, kPassRelTolerance));
        QVERIFY(near(r->kl.median, exactQuantile(kls, 0.5), kQuantileRelTolerance + kPassRelTolerance));
        QVERIFY(near(r->kl.p99, exactQuantile(kls, 0.99), kQuantileRelTolerance + kPassRelTolerance));
        // Float logits of two GEMM blockings may disagree on a near-tie: allow one position.
        QVERIFY(std::abs(r->kl.top1Agreement * n - same) <= 1.0);
        QVERIFY(near(r->kl.referencePerplexity, std::exp(nllRef / n), kPassRelTolerance));
        QVERIFY(near(r->perplexity.perplexity, std::exp(nllQ / n), kPassRelTolerance));
    }

    void progressCancelAndErrors()
    {
        const auto m = qbtest::syntheticModel(1);
        const TokenWindows w = randomWindows(6, 8, 64, 1);
        PerplexityOptions o;
        o.batch = 2;
        std::vector<std::int64_t> done;
        RunContext ctx([&](const Progress& p) {
            if (p.stage == "evaluate") done.push_back(p.done);
        });
        QVERIFY(evaluateKlDivergence(*m, *m, w, o, &ctx).ok());
        QCOMPARE(done.back(), qint64(6));

        RunContext cancel;
        cancel.setSink([&](const Progress& p) {
            if (p.stage == "evaluate" && p.done >= 2) cancel.requestCancel();
        });
        auto c = evaluateKlDivergence(*m, *m, w, o, &cancel);
        QVERIFY(!c.ok());
        QCOMPARE(int(c.error().code), int(ErrorCode::Cancelled));

        // Another vocabulary, a missing layer, no scored position: clear errors.
        qb::ModelConfig cfg = qbtest::syntheticConfig(1);
        cfg.vocabSize = 32;
        auto small = std::make_shared<model::Model>(cfg);
        small->embedding() = m->embedding().topRows(32);
        small->finalNorm() = m->finalNorm();
        small->lmHeadOwned() = m->lmHeadOwned().topRows(32);
        small->setLayer(0, m->layer(0));
        auto v = evaluateKlDivergence(*m, *small, w, o);
        QVERIFY(!v.ok());
        QVERIFY2(v.error().message.find("vocabulary") != std::string::npos, v.error().message.c_str());
        auto layerless = std::make_shared<model::Model>(*m);
        layerless->setLayer(0, nullptr);
        QVERIFY(!evaluateKlDivergence(*m, *layerless, w, o).ok());
        o.mode = ScoreMode::SecondHalf;
        const TokenWindows two = randomWindows(3, 2, 64, 1);
        auto none = evaluateKlDivergence(*m, *m, two, o);
        QVERIFY(!none.ok());
        QVERIFY2(none.error().message.find("no scored position") != std::string::npos, none.error().message.c_str());
    }

    // Streaming: the live heap at every batch boundary, above what it was before the call, is the
    // same for a text 128 times longer. A list of one float per scored token would add 4 bytes per
    // token (229 KB for the long text); logits of the whole text 64 floats per token. What this
    // cannot see: memory used and freed inside one batch (bounded by the batch, not the text).
    void memoryDoesNotGrowWithTheText()
    {
        if (heapInUse() < 0) QSKIP("needs glibc's mallinfo2");
        {
            // Sanitizer allocators (ASan) replace malloc and do not report to mallinfo2: probe.
            const qint64 before = heapInUse();
            auto probe = std::make_unique<std::vector<char>>(std::size_t(1) << 20, char(1));
            const bool reports = heapInUse() - before >= (qint64(1) << 20);
            probe.reset();
            if (!reports) QSKIP("this allocator does not report to mallinfo2 (a sanitizer build)");
        }
        const auto m = qbtest::syntheticModel(1);
        const auto q = perturbed(*m, 0.1f, 2);
        PerplexityOptions o;
        o.batch = 32;
        auto extraFor = [&](int windows) -> qint64 {
            const TokenWindows w = randomWindows(windows, 8, 64, 4);
            qint64 peak = 0;
            const qint64 before = heapInUse();
            RunContext ctx([&](const Progress& p) {
                if (p.stage == "evaluate" && p.done > 0) peak = std::max(peak, heapInUse() - before);
            });
            auto r = evaluateKlDivergence(*q, *m, w, o, &ctx);
            if (!r.ok() || r->kl.tokens != qint64(windows) * 7) return -1;
            return peak;
        };
        extraFor(64); // warm-up: thread pools and their arenas
        const qint64 shortText = extraFor(64);
        const qint64 longText = extraFor(64 * 128);
        qInfo("live heap above the start at batch boundaries: %lld bytes (64 windows), %lld bytes (8192 windows)",
              (long long)shortText, (long long)longText);
        QVERIFY(shortText > 0 && longText > 0);
        QVERIFY2(std::abs(longText - shortText) < 16 * 1024,
                 qPrintable(QStringLiteral("%1 vs %2 bytes").arg(longText).arg(shortText)));
    }
};

QTEST_GUILESS_MAIN(TestKlDivergence)
#include "tst_kl_divergence.moc"
