// JsonValue: parsing (values, escapes, numbers), errors with line:column, serialization round
// trips, and a cross-check against QJsonDocument on the same text.

#include "io/json_value.h"

#include <QJsonDocument>
#include <QJsonObject>
#include <QTest>

#include <cmath>

using namespace qb;
using namespace qb::io;

class TestJsonValue : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void parsesValues()
    {
        auto v = parseJson(R"( {"a": 1, "b": [true, false, null, -2.5e3, "x"], "c": {"d": "\u00e9\ud83d\ude00\n"}} )");
        QVERIFY2(v.ok(), v.ok() ? "" : v.error().toString().c_str());
        QVERIFY(v->isObject());
        QCOMPARE(v->asObject().size(), std::size_t(3));
        QCOMPARE(v->asObject()[0].key, std::string("a"));
        QVERIFY(v->find("a")->isInteger());
        QCOMPARE(v->find("a")->asInteger(), std::int64_t(1));
        const JsonArray& b = v->find("b")->asArray();
        QCOMPARE(b.size(), std::size_t(5));
        QVERIFY(b[0].asBool() && !b[1].asBool() && b[2].isNull());
        QCOMPARE(b[3].asNumber(), -2500.0);
        QVERIFY(!b[4].isInteger());
        QCOMPARE(v->find("c")->find("d")->asString(), std::string("\xC3\xA9\xF0\x9F\x98\x80\n"));
        QVERIFY(v->find("zz") == nullptr);
        QVERIFY(parseJson("\xEF\xBB\xBF[]").ok()); // BOM
        QVERIFY(parseJson("0").ok() && parseJson("-0.5").ok() && parseJson("\"\"").ok());
    }

    void errors_data()
    {
        QTest::addColumn<QString>("text");
        QTest::addColumn<QString>("expected");
        QTest::newRow("empty") << "" << "empty document";
        QTest::newRow("trailing comma object") << "{\"a\": 1,}" << "trailing comma in object (json:1:9)";
        QTest::newRow("trailing comma array") << "[1,\n 2,\n]" << "trailing comma in array (json:3:1)";
        QTest::newRow("missing colon") << "{\"a\" 1}" << "expected ':' after object key (json:1:6)";
        QTest::newRow("single quotes") << "{'a': 1}" << "expected a double-quoted object key";
        QTest::newRow("single quoted value") << "['a']" << "strings must use double quotes";
        QTest::newRow("duplicate key") << "{\"a\": 1, \"a\": 2}" << "duplicate object key \"a\" (json:1:10)";
        QString many = "{";
        for (int i = 0; i < 40; ++i)
            many += QString("\"k%1\": %1, ").arg(i);
        QTest::newRow("duplicate key in a large object") << many + "\"k7\": 0}" << "duplicate object key \"k7\"";
        QTest::newRow("duplicate key in a large object, nested values")
            << many + "\"k40\": {\"k7\": [1, {\"k7\": 2}]}, \"k39\": 0}" << "duplicate object key \"k39\"";
        QTest::newRow("leading zero") << "01" << "leading zeros";
        QTest::newRow("bad exponent") << "1e" << "expected a digit in the exponent";
        QTest::newRow("unterminated string") << "\"abc" << "unterminated string (json:1:1)";
        QTest::newRow("bad escape") << "\"\\x\"" << "invalid escape";
        QTest::newRow("lone surrogate") << "\"\\udc00\"" << "unpaired low surrogate";
        QTest::newRow("control char") << "\"a\tb\"" << "control character";
        QTest::newRow("garbage after") << "{} x" << "unexpected text after the JSON value (json:1:4)";
        QTest::newRow("bad literal") << "[tru]" << "unexpected character 't'";
        QTest::newRow("unterminated array") << "[1, 2" << "unterminated array";
        QTest::newRow("huge number") << "1e999" << "number out of range";
        QTest::newRow("too deep") << QString(300, '[') << "nesting deeper than 256";
    }
    void errors()
    {
        QFETCH(QString, text);
        QFETCH(QString, expected);
        auto v = parseJson(text.toStdString());
        QVERIFY(!v.ok());
        QCOMPARE(v.error().code, ErrorCode::Format);
        const QString got = QString::fromStdString(v.error().toString());
        QVERIFY2(got.contains(expected), qPrintable(got));
    }

    void utf8IsCheckedBothWays()
    {
        // A bad continuation byte on line 2, column 8; an overlong '/' (C0 AF); a lone surrogate (ED A0 80).
        for (const std::string& bad :
             {std::string("{\n\"a\": \"x\xC3(\"}"), std::string("[\"\xC0\xAF\"]"), std::string("[\"\xED\xA0\x80\"]")}) {
            auto v = parseJson(bad);
            QVERIFY(!v.ok());
            QCOMPARE(v.error().code, ErrorCode::Format);
            QVERIFY2(v.error().message.find("invalid UTF-8") != std::string::npos, v.error().toString().c_str());
        }
        QCOMPARE(parseJson("{\n\"a\": \"x\xC3(\"}").error().context, std::string("json:2:8"));
        // Valid multi-byte text passes; invalid bytes are written as U+FFFD (the output is valid JSON).
        QVERIFY(parseJson("[\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"]").ok());
        QCOMPARE(jsonQuote("a\xFF"
                           "b"),
                 std::string("\"a\xEF\xBF\xBD"
                             "b\""));
        QVERIFY(parseJson(toJsonText(JsonValue(std::string("x\xC3")), -1)).ok());
    }

    void roundTrip_data()
    {
        QTest::addColumn<QString>("text");
        QTest::newRow("nested") << R"({"default":{"method":"neuqi","bits":4},"rules":[{"match":"*","skip":true}]})";
        QTest::newRow("numbers") << R"([0,-1,1.5,0.1,1e-07,123456789012,3.141592653589793,-2.5e+300])";
        // Not a raw string: moc's tokenizer misreads \" inside raw strings.
        QTest::newRow("strings") << "[\"a\\\"b\",\"back\\\\slash\",\"tab\\tnl\\n\",\"\\u0001\",\"\u00e9\"]";
        QTest::newRow("empties") << R"({"a":{},"b":[],"c":""})";
    }
    void roundTrip()
    {
        QFETCH(QString, text);
        auto v = parseJson(text.toStdString());
        QVERIFY2(v.ok(), v.ok() ? "" : v.error().toString().c_str());
        for (int indent : {-1, 0, 2, 4}) {
            const std::string out = toJsonText(*v, indent);
            auto back = parseJson(out);
            QVERIFY2(back.ok(), out.c_str());
            QVERIFY2(*back == *v, out.c_str());
            // Qt reads what we write, with the same numbers.
            QJsonParseError err;
            QJsonDocument::fromJson(QByteArray::fromStdString(out), &err);
            QCOMPARE(err.error, QJsonParseError::NoError);
        }
        if (!text.contains("\\u0001") && !text.contains("é") && !text.contains("e+300") && !text.contains("e-07"))
            QCOMPARE(QString::fromStdString(toJsonText(*v, -1)), text);
    }

    void buildAndSerialize()
    {
        JsonValue o;
        o.set("name", "x");
        o.set("n", 3);
        o.set("f", 0.25);
        o.set("list", JsonArray{JsonValue(1), JsonValue(true), JsonValue()});
        o.set("n", 4); // replaces in place
        QCOMPARE(toJsonText(o, -1), std::string(R"({"name":"x","n":4,"f":0.25,"list":[1,true,null]})"));
        QCOMPARE(toJsonText(JsonValue(NAN), -1), std::string("null"));
        QCOMPARE(toJsonText(o, 2), std::string("{\n  \"name\": \"x\",\n  \"n\": 4,\n  \"f\": 0.25,\n"
                                               "  \"list\": [1, true, null]\n}\n"));
        QCOMPARE(jsonQuote("a\"\\\x01"), std::string("\"a\\\"\\\\\\u0001\""));
    }
};

QTEST_GUILESS_MAIN(TestJsonValue)
#include "tst_json_value.moc"
