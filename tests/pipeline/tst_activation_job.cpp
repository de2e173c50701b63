// Activation statistics job on the demo model: the layer-at-a-time job sees exactly the
// activations that a full forward pass with taps sees, shapes are right, cancel works.

#include "model/forward.h"
#include "pipeline/activation_job.h"
#include "pipeline/model_loader.h"
#include "pipeline/perplexity_job.h"

#include <QTest>

#include <map>

using namespace qb;

class TestActivationJob : public QObject {
    Q_OBJECT

    io::Checkpoint m_ck;
    pipeline::CalibrationSet m_calib;

private Q_SLOTS:
    void initTestCase()
    {
        auto ck = io::openCheckpoint(QB_DEMO_DIR);
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        m_ck = std::move(ck).value();
        auto tok = io::Tokenizer::fromFile(m_ck.tokenizerPath);
        QVERIFY(tok.ok());
        auto text = pipeline::readTextFile(QB_DEMO_DIR "/calib.txt");
        QVERIFY(text.ok());
        pipeline::CalibrationOptions co;
        co.nsamples = 6;
        co.seqlen = 64;
        co.seed = 1;
        auto calib = pipeline::buildCalibrationSet(*tok, *text, co);
        QVERIFY(calib.ok());
        m_calib = std::move(calib).value();
    }

    void matchesFullForwardWithTaps()
    {
        pipeline::ActivationJobOptions opt;
        opt.batch = 4; // 2 batches: the second one partial
        RunContext ctx;
        auto r = pipeline::collectActivationStats(m_ck, m_calib, opt, &ctx);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        const auto& cfg = m_ck.config;
        QCOMPARE(int(r->taps.size()), int(cfg.numHiddenLayers) * 4);
        QCOMPARE(ctx.progress().stage, std::string("calibrate"));
        QCOMPARE(ctx.progress().done, ctx.progress().total);

        // Reference: the whole model in memory, one forward pass over all windows.
        auto model = pipeline::loadModel(m_ck);
        QVERIFY(model.ok());
        std::map<std::pair<int, model::LinearKind>, eval::ActivationStats> ref;
        model::Workspace ws;
        auto logits =
            model::forwardLogits(**model, m_calib.ids, m_calib.seqlen, ws,
                                 [&](int l, model::LinearKind k, const Eigen::Ref<const model::RowMatrix>& x) {
                                     ref.try_emplace({l, k}, opt.bins).first->second.add(x);
                                 });
        QVERIFY(logits.ok());
        for (const auto& [key, stats] : r->taps) {
            const auto& want = ref.at(key);
            QCOMPARE(stats.tokens(), std::int64_t(m_calib.count) * m_calib.seqlen);
            QCOMPARE(stats.channels(), want.channels());
            const auto a = stats.channelMaxAbs(), b = want.channelMaxAbs();
            for (std::size_t c = 0; c < a.size(); ++c)
                QVERIFY2(std::abs(a[c] - b[c]) <= 1e-4f * std::max(1.f, b[c]),
                         qPrintable(QStringLiteral("layer %1 channel %2").arg(key.first).arg(c)));
            QVERIFY(std::abs(stats.moments().kurtosis - want.moments().kurtosis) < 1e-3);
        }
        // Channel counts per input kind.
        const auto* qkv = r->forTensor("model.layers.2.self_attn.k_proj.weight");
        const auto* down = r->forTensor("model.layers.2.mlp.down_proj.weight");
        const auto* o = r->forTensor("model.layers.0.self_attn.o_proj.weight");
        QVERIFY(qkv && down && o);
        QCOMPARE(qkv->channels(), int(cfg.hiddenSize));
        QCOMPARE(down->channels(), int(cfg.intermediateSize));
        QCOMPARE(o->channels(), int(cfg.numAttentionHeads * cfg.headDim));
        QVERIFY(!r->forTensor("model.embed_tokens.weight"));
    }

    void cancelStopsEarly()
    {
        RunContext ctx;
        ctx.requestCancel();
        auto r = pipeline::collectActivationStats(m_ck, m_calib, {}, &ctx);
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Cancelled));
    }
};

QTEST_GUILESS_MAIN(TestActivationJob)
#include "tst_activation_job.moc"
