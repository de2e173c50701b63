// Quantization plans: parsing, validation errors, glob matching, rule overrides, warnings, bit
// accounting and save/load round trips (data-driven).

#include "pipeline/quant_plan.h"
#include "quant_test_models.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;
using namespace qb::pipeline;

Q_DECLARE_METATYPE(std::string)

class TestQuantPlan : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void glob_data()
    {
        QTest::addColumn<QString>("pattern");
        QTest::addColumn<QString>("name");
        QTest::addColumn<bool>("match");
        QTest::newRow("star across dots") << "model.layers.*.mlp.down_proj" << "model.layers.12.mlp.down_proj" << true;
        QTest::newRow("star wrong tail") << "model.layers.*.mlp.down_proj" << "model.layers.1.mlp.up_proj" << false;
        QTest::newRow("prefix star") << "model.layers.0.*" << "model.layers.0.self_attn.q_proj" << true;
        QTest::newRow("prefix star other layer") << "model.layers.0.*" << "model.layers.10.mlp.up_proj" << false;
        QTest::newRow("question") << "model.layers.?.mlp.up_proj" << "model.layers.3.mlp.up_proj" << true;
        QTest::newRow("question two digits") << "model.layers.?.mlp.up_proj" << "model.layers.13.mlp.up_proj" << false;
        QTest::newRow("class range") << "model.layers.[0-2].*" << "model.layers.1.mlp.up_proj" << true;
        QTest::newRow("class miss") << "model.layers.[0-2].*" << "model.layers.3.mlp.up_proj" << false;
        QTest::newRow("negated class") << "model.layers.[!0].*" << "model.layers.3.x" << true;
        QTest::newRow("exact") << "lm_head" << "lm_head" << true;
        QTest::newRow("multi star") << "*attn*proj" << "model.layers.0.self_attn.k_proj" << true;
        QTest::newRow("empty pattern") << "" << "x" << false;
        QTest::newRow("unclosed bracket literal") << "a[b" << "a[b" << true;
    }
    void glob()
    {
        QFETCH(QString, pattern);
        QFETCH(QString, name);
        QFETCH(bool, match);
        QCOMPARE(globMatch(pattern.toStdString(), name.toStdString()), match);
    }

    void weightSuffixOptional()
    {
        QVERIFY(planPatternMatches("model.layers.*.mlp.down_proj", "model.layers.1.mlp.down_proj.weight"));
        QVERIFY(planPatternMatches("model.layers.*.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"));
        QVERIFY(!planPatternMatches("model.layers.*.mlp.down", "model.layers.1.mlp.down_proj.weight"));
    }

    void invalidPlans_data()
    {
        QTest::addColumn<QString>("json");
        QTest::addColumn<QString>("message");
        QTest::newRow("unknown method lists valid") << R"({"default": {"method": "awq", "bits": 4}})"
                                                    << "unknown method \"awq\" (valid: rtn, gptq, neuqi, cmpq)";
        QTest::newRow("bits too high") << R"({"default": {"method": "rtn", "bits": 9}})"
                                       << "bits 9 out of range [2, 8]";
        QTest::newRow("bits too low") << R"({"default": {"method": "rtn", "bits": 1}})" << "out of range";
        QTest::newRow("bits fractional out of range") << R"({"default": {"method": "cmpq", "bits": 8.5}})"
                                                      << "average bits 8.500000 out of range";
        QTest::newRow("cmpq levels not ascending") << R"({"default": {"method": "cmpq", "levels": [3, 2]}})"
                                                   << "levels must be strictly ascending";
        QTest::newRow("cmpq bad score") << R"({"default": {"method": "cmpq", "score": "median"}})"
                                        << "score must be";
        QTest::newRow("cmpq outliers range") << R"({"default": {"method": "cmpq", "act_outliers": 0.6}})"
                                             << "act_outliers must be a fraction";
        QTest::newRow("group zero") << R"({"default": {"method": "gptq", "bits": 4, "group_size": 0}})"
                                    << "group size 0 must be positive";
        QTest::newRow("group negative") << R"({"default": {"method": "gptq", "bits": 4, "group_size": -5}})"
                                        << "must be positive";
        QTest::newRow("unknown key in default") << R"({"default": {"method": "gptq", "bitz": 4}})"
                                                << "unknown key \"bitz\"";
        QTest::newRow("unknown key in rule")
            << R"({"default": {"method": "gptq"}, "rules": [{"match": "x", "grp": 1}]})"
            << "plan: rules[0].grp";
        QTest::newRow("unknown top key") << R"({"default": {"method": "gptq"}, "rulez": []})"
                                         << "unknown key \"rulez\"";
        QTest::newRow("missing default") << R"({"rules": []})" << "needs a \"default\" object with a \"method\"";
        QTest::newRow("missing method") << R"({"default": {"bits": 4}})" << "with a \"method\"";
        QTest::newRow("rule without match") << R"({"default": {"method": "rtn"}, "rules": [{"bits": 8}]})"
                                            << "needs a \"match\" glob";
        QTest::newRow("wrong type") << R"({"default": {"method": "rtn", "sym": "yes"}})" << "expected true or false";
        QTest::newRow("rules not array") << R"({"default": {"method": "rtn"}, "rules": {}})" << "expected an array";
        QTest::newRow("bad version") << R"({"version": 2, "default": {"method": "rtn"}})" << "unsupported plan version";
        QTest::newRow("damping range") << R"({"default": {"method": "gptq", "damping": 2}})" << "damping must be";
        QTest::newRow("json syntax names position") << "{\"default\": {\"method\": \"rtn\",}}" << "plan:1:";
        QTest::newRow("not an object") << "[1, 2]" << "must be a JSON object";
    }
    void invalidPlans()
    {
        QFETCH(QString, json);
        QFETCH(QString, message);
        auto p = quantPlanFromText(json.toStdString());
        QVERIFY(!p.ok());
        const QString got = QString::fromStdString(p.error().toString());
        QVERIFY2(got.contains(message), qPrintable(got));
    }

    // CMPQ (reconstruction): fractional bits only for it, its keys only with it, no storage
    // container, plan-wide budgets shared over the tensors' minimums, per-tensor scope.
    void cmpqPlans()
    {
        const ModelConfig c = qbtest::syntheticConfig(); // 16..48 rows: codebooks are expensive
        auto resolveText = [&](const char* json) -> Result<ResolvedPlan> {
            auto p = quantPlanFromText(json);
            if (!p.ok()) return p.error();
            return resolveQuantPlan(*p, c);
        };
        auto rtn = resolveText(R"({"default": {"method": "rtn", "bits": 3.5}})");
        QVERIFY(!rtn.ok() && rtn.error().message.find("takes integer bits") != std::string::npos);
        auto keys = quantPlanFromText(R"({"default": {"method": "gptq", "bits": 3, "act_outliers": 0.01}})");
        QVERIFY(!keys.ok() && keys.error().message.find("no CMPQ settings") != std::string::npos);
        auto target = resolveText(R"({"default": {"method": "cmpq", "bits": 6.5, "target": "gguf:Q4_K"}})");
        QVERIFY(!target.ok() && target.error().message.find("codebooks") != std::string::npos);
        auto low = resolveText(R"({"default": {"method": "cmpq", "bits": 2.5}})");
        QVERIFY(!low.ok() && low.error().message.find("minimum") != std::string::npos);
        // Plan scope: k/v (16 rows) cost more than q/gate/up; the average is still the asked one.
        auto shared =
            resolveText(R"({"default": {"method": "cmpq", "bits": 6.3, "act_outliers": 0, "quant_outliers": 0.01}})");
        QVERIFY2(shared.ok(), shared.ok() ? "" : shared.error().message.c_str());
        QVERIFY(std::abs(shared->bitsPerWeight - 6.3) < 1e-9);
        double lo = 1e9, hi = 0;
        for (const TensorPlan& t : shared->tensors) {
            QCOMPARE(t.method, quant::Method::Cmpq);
            QCOMPARE(t.cmpq.bits, t.bitsPerWeight);
            QVERIFY(t.cmpq.bits + 1e-12 >= quant::cmpqMinimumBitsPerWeight(t.rows, t.cols, t.cmpq));
            QCOMPARE(t.cmpq.quantOutliers, 0.01);
            lo = std::min(lo, t.cmpq.bits), hi = std::max(hi, t.cmpq.bits);
        }
        QVERIFY(hi > lo); // the minimums differ, so the budget moved
        // Tensor scope: every tensor the asked average, or an error naming the tensor.
        auto each = resolveText(R"({"default": {"method": "cmpq", "bits": 6.5, "bits_scope": "tensor",
                                "act_outliers": 0, "quant_outliers": 0}})");
        QVERIFY(each.ok());
        for (const TensorPlan& t : each->tensors)
            QCOMPARE(t.cmpq.bits, 6.5);
        // Integer bits are an average too; rules mix methods; save -> load keeps every key.
        const char* mixed = R"({"default": {"method": "cmpq", "bits": 7, "levels": [1, 2, 3], "score": "max_abs",
            "kmeans": false, "kmeans_weights": "energy", "act_outliers": 0.05, "quant_outliers": 0.001,
            "error_feedback": false, "static_codebooks": false, "bits_scope": "tensor"},
            "rules": [{"match": "*.mlp.*", "method": "gptq", "bits": 4, "group_size": 16}]})";
        auto plan = quantPlanFromText(mixed);
        QVERIFY(plan.ok());
        auto r = resolveQuantPlan(*plan, c);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().message.c_str());
        const TensorPlan* q = r->find("model.layers.0.self_attn.q_proj");
        QVERIFY(q && q->method == quant::Method::Cmpq);
        QCOMPARE(q->cmpq.levels, (std::vector<int>{1, 2, 3}));
        QCOMPARE(q->cmpq.score, quant::CmpqScore::MaxAbs);
        QVERIFY(q->cmpq.uniformLevels && !q->cmpq.errorFeedback && !q->cmpq.staticCodebooks);
        QCOMPARE(q->cmpq.weights, quant::CmpqWeights::Energy);
        QCOMPARE(r->find("model.layers.0.mlp.up_proj")->method, quant::Method::Gptq);
        auto again = quantPlanFromJson(quantPlanToJson(*plan));
        QVERIFY(again.ok() && *again == *plan);
        auto frac = quantPlanFromJson(quantPlanToJson(uniformQuantPlanBits(quant::Method::Cmpq, 2.75)));
        QVERIFY(frac.ok() && frac->defaults.avgBits == 2.75 && !frac->defaults.bits);
        QCOMPARE(describeQuantPlan(*frac), std::string("CMPQ (reconstruction) 2.75 bpw"));
    }

    void symWithNeuqiIsAnError()
    {
        auto p = quantPlanFromText(R"({"default": {"method": "neuqi", "bits": 3, "sym": true}})");
        QVERIFY(p.ok()); // syntactically fine; the combination is checked at resolution
        auto r = resolveQuantPlan(*p, qbtest::syntheticConfig());
        QVERIFY(!r.ok());
        QVERIFY2(r.error().message.find("no symmetric grid") != std::string::npos, r.error().message.c_str());
        // A skipped tensor does not need a valid combination.
        auto p2 = quantPlanFromText(R"({"default": {"method": "neuqi", "bits": 3, "sym": true, "skip": true}})");
        QVERIFY(resolveQuantPlan(*p2, qbtest::syntheticConfig()).ok());
    }

    void overridesAndDefaults()
    {
        auto p = quantPlanFromText(R"({
            "default": {"method": "neuqi", "bits": 4, "group_size": 128, "sym": false},
            "rules": [
                {"match": "model.layers.*.mlp.down_proj", "bits": 8},
                {"match": "model.layers.0.*", "skip": true},
                {"match": "model.layers.0.mlp.down_proj", "skip": false, "method": "gptq", "group_size": 20},
                {"match": "model.layers.1.self_attn.*", "method": "rtn", "bits": 3, "sym": true},
                {"match": "lm_head", "bits": 2}
            ]})");
        QVERIFY2(p.ok(), p.ok() ? "" : p.error().toString().c_str());
        auto r = resolveQuantPlan(*p, qbtest::syntheticConfig(2));
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(r->tensors.size(), std::size_t(14));
        const TensorPlan* q0 = r->find("model.layers.0.self_attn.q_proj");
        QVERIFY(q0 && q0->skip);
        QCOMPARE(q0->bitsPerWeight, 16.0);
        const TensorPlan* d0 = r->find("model.layers.0.mlp.down_proj.weight");
        QVERIFY(d0 && !d0->skip);
        QCOMPARE(d0->method, quant::Method::Gptq);
        QCOMPARE(d0->options.grid.bits, 8);       // from rule 0, not overridden later
        QCOMPARE(d0->options.grid.groupSize, 20); // 48 columns: groups 20, 20, 8
        QCOMPARE(d0->options.actOrder, false);    // unset anywhere: gptq's default
        QCOMPARE(d0->options.groups, quant::GroupMode::Dynamic);
        QCOMPARE(d0->bitsPerWeight, quant::bitsPerWeightUniform(8, 20, 48, false));
        const TensorPlan* u1 = r->find("model.layers.1.mlp.up_proj");
        QCOMPARE(u1->method, quant::Method::Neuqi);
        QCOMPARE(u1->options.grid.bits, 4);
        QCOMPARE(u1->options.actOrder, true); // neuqi's default
        QCOMPARE(u1->options.init, quant::GridInit::Neuqi);
        QCOMPARE(u1->options.grid.groupSize, 128); // wider than 32 columns: per channel
        const TensorPlan* k1 = r->find("model.layers.1.self_attn.k_proj");
        QCOMPARE(k1->method, quant::Method::Rtn);
        QCOMPARE(k1->options.grid.bits, 3);
        QVERIFY(k1->options.grid.sym);
        // Warnings: the lm_head rule matches nothing.
        QCOMPARE(r->warnings.size(), std::size_t(1));
        QCOMPARE(r->warnings[0].type, std::string("unmatched-rule"));
        QVERIFY(r->warnings[0].detail.find("rule 4 (\"lm_head\")") != std::string::npos);
    }

    void bitAccounting()
    {
        const ModelConfig c = qbtest::syntheticConfig(2);
        auto r = resolveQuantPlan(uniformQuantPlan(quant::Method::Gptq, 4, 16), c);
        QVERIFY(r.ok());
        // q: 32x32, k,v: 16x32, o: 32x32, gate/up: 48x32, down: 32x48 per layer.
        const std::int64_t perLayer = 32 * 32 * 2 + 16 * 32 * 2 + 48 * 32 * 2 + 32 * 48;
        QCOMPARE(r->linearParams, 2 * perLayer);
        QCOMPARE(r->quantizedParams, 2 * perLayer);
        QVERIFY(std::abs(r->bitsPerWeight - (4 + 32.0 / 16)) < 1e-12); // F16 scale + F16 zero per 16
        const std::int64_t others = 2 * 64 * 32 + 32 + 2 * 2 * 32;     // embed + lm_head, norms
        QCOMPARE(r->linearBytes, std::uint64_t(2 * perLayer * 6 / 8));
        QCOMPARE(r->sizeBytes, r->linearBytes + std::uint64_t(others * 2));
        auto s = resolveQuantPlan(*quantPlanFromText(R"({"default": {"method": "rtn", "bits": 3, "sym": true,
            "group_size": 20}, "rules": [{"match": "model.layers.1.*", "skip": true}]})"),
                                  c);
        QVERIFY(s.ok());
        QCOMPARE(s->quantizedParams, perLayer);
        double want = 0;
        want += 16.0 * double(perLayer);
        want += quant::bitsPerWeightUniform(3, 20, 32, true) * (32 * 32 * 2 + 16 * 32 * 2 + 48 * 32 * 2);
        want += quant::bitsPerWeightUniform(3, 20, 48, true) * (32 * 48);
        QVERIFY(std::abs(s->bitsPerWeight - want / double(2 * perLayer)) < 1e-12);
    }

    // Storage targets (issue 11): parsing, what a target implies, conflicts, llama.cpp's row
    // fallbacks, embedding/head defaults, whole-file accounting and the JSON round trip.
    void storageTargets()
    {
        QCOMPARE(*parsePlanTarget("gguf:q4_k"), std::string("Q4_K"));
        QCOMPARE(*parsePlanTarget("Q8_0"), std::string("Q8_0"));
        QCOMPARE(*parsePlanTarget("f16"), std::string("F16"));
        QCOMPARE(*parsePlanTarget("none"), std::string("none"));
        auto bad = parsePlanTarget("gguf:Q4_3");
        QVERIFY(!bad.ok());
        QVERIFY2(bad.error().message.find("gguf:Q4_K") != std::string::npos, bad.error().message.c_str());
        QVERIFY(!quantPlanFromText(R"({"default": {"method": "gptq", "target": 4}})").ok());
        QVERIFY(!quantPlanFromText(R"({"default": {"method": "gptq"}, "embed_type": "none"})").ok());

        // 256-wide rows so K-quants fit: hidden 256, intermediate 512.
        ModelConfig c = qbtest::syntheticConfig(2);
        c.hiddenSize = 256;
        c.intermediateSize = 512;
        c.headDim = 128;
        auto p = quantPlanFromText(R"({"default": {"method": "gptq", "bits": 3},
            "rules": [{"match": "*", "target": "Q4_K"}, {"match": "*.mlp.down_proj", "target": "gguf:Q6_K"},
                      {"match": "*.self_attn.v_proj", "method": "neuqi", "target": "Q4_0"},
                      {"match": "model.layers.1.mlp.up_proj", "target": "F16"}]})");
        QVERIFY2(p.ok(), p.ok() ? "" : p.error().toString().c_str());
        auto r = resolveQuantPlan(*p, c);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str()); // bits 3 came before the target
        QVERIFY(r->ggufTargets);
        const TensorPlan* q = r->find("model.layers.0.self_attn.q_proj");
        QCOMPARE(q->target, std::string("Q4_K"));
        QVERIFY(q->inContainer());
        QCOMPARE(q->options.grid.bits, 4);
        QCOMPARE(q->options.grid.groupSize, 32);
        QCOMPARE(q->options.groups, quant::GroupMode::Static);
        QCOMPARE(q->bitsPerWeight, 4.5);
        const TensorPlan* d = r->find("model.layers.1.mlp.down_proj");
        QCOMPARE(d->target, std::string("Q6_K"));
        QCOMPARE(d->options.grid.bits, 6);
        QCOMPARE(d->options.grid.groupSize, 16);
        const TensorPlan* v = r->find("model.layers.0.self_attn.v_proj");
        QCOMPARE(v->method, quant::Method::Neuqi);
        QCOMPARE(v->target, std::string("Q4_0"));
        QVERIFY(v->options.grid.sym); // neuqi inside a symmetric container is fine
        const TensorPlan* u = r->find("model.layers.1.mlp.up_proj");
        QVERIFY(u->skip && !u->inContainer());
        QCOMPARE(u->bitsPerWeight, 16.0);
        // Embedding in the most common type (Q4_K), head in Q6_K; file bytes add up exactly.
        QCOMPARE(r->embedType, std::string("Q4_K"));
        QCOMPARE(r->headType, std::string("Q6_K"));
        std::uint64_t linear = 0;
        for (const TensorPlan& t : r->tensors)
            linear += std::uint64_t(t.bitsPerWeight * double(t.rows * t.cols) / 8.0);
        QCOMPARE(r->linearBytes, linear);
        const std::uint64_t table = 64 * 256;
        QCOMPARE(r->sizeBytes, linear + table * 144 / 256 + table * 210 / 256 + (256 + 2 * 2 * 256) * 4);
        QVERIFY(r->warnings.empty());

        // A bits set with the target (or after it) must agree; the error names the tensor.
        auto conflict = resolveQuantPlan(*quantPlanFromText(R"({"default": {"method": "rtn", "target": "Q4_K"},
            "rules": [{"match": "*.mlp.gate_proj", "bits": 8}]})"),
                                         c);
        QVERIFY(!conflict.ok());
        QVERIFY2(conflict.error().message.find("bits 8 conflicts with target Q4_K") != std::string::npos,
                 conflict.error().message.c_str());
        QVERIFY(conflict.error().context.find("model.layers.0.mlp.gate_proj") != std::string::npos);
        QVERIFY(
            resolveQuantPlan(*quantPlanFromText(R"({"default": {"method": "rtn", "bits": 4, "target": "Q4_K"}})"), c)
                .ok());

        // Rows of 32 and 64: K-quants fall back as llama.cpp does, one warning per pair.
        ModelConfig narrow = qbtest::syntheticConfig(2);
        narrow.intermediateSize = 64;
        auto fb = resolveQuantPlan(*quantPlanFromText(R"({"default": {"method": "gptq", "target": "Q4_K"},
            "rules": [{"match": "*.mlp.*", "target": "Q3_K"}]})"),
                                   narrow);
        QVERIFY2(fb.ok(), fb.ok() ? "" : fb.error().toString().c_str());
        QCOMPARE(fb->find("model.layers.0.self_attn.q_proj")->target, std::string("Q5_0"));
        QVERIFY(fb->find("model.layers.0.self_attn.q_proj")->targetNote.find("falls back to Q5_0") !=
                std::string::npos);
        QCOMPARE(fb->find("model.layers.0.mlp.down_proj")->target, std::string("Q4_0"));
        QCOMPARE(fb->embedType, std::string("Q4_0")); // Q3_K asked (the MLP holds most weights)
        QCOMPARE(fb->headType, std::string("Q8_0"));  // Q6_K's fallback
        int fallbacks = 0;
        for (const auto& w : fb->warnings)
            fallbacks += w.type == "target-fallback";
        QCOMPARE(fallbacks, 4); // Q4_K->Q5_0, Q3_K->Q4_0, embedding, head
        // A row no block holds is refused before anything runs.
        ModelConfig odd = qbtest::syntheticConfig(1);
        odd.intermediateSize = 40;
        auto none = resolveQuantPlan(*quantPlanFromText(R"({"default": {"method": "rtn", "target": "Q4_K"}})"), odd);
        QVERIFY(!none.ok());
        QVERIFY2(none.error().message.find("fits no Q4_K block") != std::string::npos, none.error().message.c_str());

        // The gptq target: a free grid storable in a GPTQ checkpoint, embedding and head in F16;
        // one plan does not mix GGUF and GPTQ targets.
        auto g = resolveQuantPlan(*quantPlanFromText(R"({"default": {"method": "gptq", "bits": 3, "group_size": 16,
            "target": "gptq"}})"),
                                  qbtest::syntheticConfig(2));
        QVERIFY(g.ok());
        QVERIFY(g->gptqTargets && !g->ggufTargets);
        QVERIFY(g->tensors[0].options.grid.gptqStorage && !g->tensors[0].inContainer());
        QCOMPARE(g->tensors[0].options.grid.bits, 3);
        QCOMPARE(g->embedType, std::string("F16"));
        auto both = resolveQuantPlan(*quantPlanFromText(R"({"default": {"method": "gptq", "bits": 4, "target": "gptq"},
            "rules": [{"match": "*.mlp.*", "target": "Q4_0"}]})"),
                                     narrow);
        QVERIFY(!both.ok());
        QVERIFY2(both.error().message.find("GGUF types or gptq") != std::string::npos, both.error().message.c_str());

        // Round trip keeps targets, embed and head types.
        auto withTypes = quantPlanFromText(R"({"default": {"method": "neuqi", "target": "q5_k"},
            "rules": [{"match": "model.layers.0.*", "target": "none", "bits": 8}], "embed_type": "q8_0",
            "head_type": "F16"})");
        QVERIFY(withTypes.ok());
        QCOMPARE(*withTypes->embedType, std::string("Q8_0"));
        auto again = quantPlanFromJson(quantPlanToJson(*withTypes));
        QVERIFY(again.ok());
        QVERIFY(*again == *withTypes);
        QCOMPARE(describeQuantPlan(*withTypes), std::string("NeUQI Q5_K +1 rule"));
    }

    void saveLoadRoundTrip()
    {
        const char* text = R"({"description": "mixed", "default": {"method": "neuqi", "bits": 3, "group_size": 64,
            "act_order": true, "damping": 0.02, "block_size": 32},
            "rules": [{"match": "model.layers.*.mlp.down_proj", "bits": 8, "method": "gptq", "sym": true,
                       "static_groups": true}, {"match": "model.layers.0.*", "skip": true}]})";
        auto p = quantPlanFromText(text);
        QVERIFY2(p.ok(), p.ok() ? "" : p.error().toString().c_str());
        QTemporaryDir dir;
        const std::string path = dir.filePath("plan.json").toStdString();
        QVERIFY(saveQuantPlan(*p, path).ok());
        auto back = loadQuantPlan(path);
        QVERIFY2(back.ok(), back.ok() ? "" : back.error().toString().c_str());
        QVERIFY(*back == *p);
        QCOMPARE(back->rules.size(), std::size_t(2));
        QCOMPARE(*back->defaults.damping, 0.02);
        // Unset fields stay unset after the round trip (so the method defaults still apply).
        QVERIFY(!back->rules[1].settings.bits.has_value());
        const std::string json = io::toJsonText(quantPlanToJson(*p));
        QVERIFY(json.find("\"version\": 1") != std::string::npos);
        QVERIFY(!loadQuantPlan(dir.filePath("missing.json").toStdString()).ok());
    }
};

QTEST_GUILESS_MAIN(TestQuantPlan)
#include "tst_quant_plan.moc"
