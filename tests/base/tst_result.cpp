#include "base/result.h"

#include <QTest>

using namespace qb;

namespace {
Result<int> parsePositive(int v)
{
    if (v <= 0) return makeError(ErrorCode::InvalidArgument, "not positive", "value " + std::to_string(v));
    return v;
}
Result<int> doubled(int v)
{
    QB_TRY(r, parsePositive(v));
    return *r * 2;
}
Status check(int v)
{
    QB_TRY_STATUS(parsePositive(v));
    return {};
}
} // namespace

class TestResult : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void valueAndError()
    {
        auto ok = parsePositive(3);
        QVERIFY(ok.ok());
        QCOMPARE(*ok, 3);
        auto bad = parsePositive(-1);
        QVERIFY(!bad.ok());
        QCOMPARE(int(bad.error().code), int(ErrorCode::InvalidArgument));
        QCOMPARE(bad.error().toString(), std::string("not positive (value -1)"));
    }
    void propagation()
    {
        QCOMPARE(*doubled(4), 8);
        QVERIFY(!doubled(0).ok());
        QVERIFY(check(1).ok());
        QCOMPARE(check(0).error().message, std::string("not positive"));
    }
    void contextNesting()
    {
        Error e = makeError(ErrorCode::Format, "bad magic", "offset 0");
        Error outer = e.withContext("model.gguf");
        QCOMPARE(outer.context, std::string("model.gguf: offset 0"));
        QCOMPARE(std::string(errorCodeName(outer.code)), std::string("format"));
    }
    void moveOnlyValue()
    {
        Result<std::unique_ptr<int>> r(std::make_unique<int>(7));
        std::unique_ptr<int> p = std::move(r).value();
        QCOMPARE(*p, 7);
    }
};

QTEST_GUILESS_MAIN(TestResult)
#include "tst_result.moc"
