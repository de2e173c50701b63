// Restricted pickle decoder for torch checkpoints. Opcode set: FORMATS.md §6.4, plus POP,
// POP_MARK, ADDITEMS and LONG4 for robustness. Anything else is a Format error with its offset.
//
// Hostile pickles: the machine itself is iterative, but its values form a graph that memo
// references can make cyclic (a list appended to itself) or nest hundreds of thousands deep
// (([[...]])), and shared_ptr destruction of such a graph recurses once per level. So every value
// the machine creates is also held in an arena; the result returned is first checked to be
// acyclic and at most kMaxPickleNesting deep, and on exit every value that is not part of the
// returned result has its edges cut, so dropping the arena frees them one by one.

#include "io/pickle.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

namespace qb::io::detail {

namespace {

using K = PickleValue::Kind;

// Far deeper than any state_dict (a handful of levels), shallow enough that destroying or
// walking a result recursively is safe on any thread's stack.
constexpr std::size_t kMaxPickleNesting = 1000;

struct StorageClass {
    const char* name;
    DType dtype;
};
constexpr StorageClass kStorages[] = {{"torch.FloatStorage", DType::F32},     {"torch.HalfStorage", DType::F16},
                                      {"torch.BFloat16Storage", DType::BF16}, {"torch.DoubleStorage", DType::F64},
                                      {"torch.LongStorage", DType::I64},      {"torch.IntStorage", DType::I32},
                                      {"torch.ShortStorage", DType::I16},     {"torch.CharStorage", DType::I8},
                                      {"torch.ByteStorage", DType::U8},       {"torch.BoolStorage", DType::Bool}};

constexpr const char* kAllowed[] = {"collections.OrderedDict",
                                    "torch._utils._rebuild_tensor_v2",
                                    "torch._utils._rebuild_tensor",
                                    "torch._utils._rebuild_parameter",
                                    "torch._utils._rebuild_parameter_with_state",
                                    "torch._tensor._rebuild_from_type_v2",
                                    "torch.nn.parameter.Parameter",
                                    "torch.Tensor",
                                    "torch.Size"};

class Machine {
public:
    Machine(const ByteRange& data, const std::string& context) : m_cur(data), m_context(context) {}
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    // Cuts the edges of every value that is not part of the returned result (see the top).
    ~Machine()
    {
        for (const PickleRef& v : m_all)
            if (!m_kept.count(v.get())) {
                v->items.clear();
                v->dict.clear();
                v->storage.reset();
            }
    }

    Result<PickleRef> run()
    {
        while (true) {
            const std::uint64_t at = m_cur.pos();
            auto op = m_cur.read<std::uint8_t>();
            if (!op.ok()) return fail("pickle ends without STOP", at);
            m_at = at;
            if (*op == '.') {
                if (m_stack.empty()) return fail("STOP with an empty stack", at);
                PickleRef result = m_stack.back();
                QB_TRY_STATUS(keepResult(result));
                return result;
            }
            auto st = step(*op);
            if (!st.ok()) return st.error();
        }
    }

private:
    PickleRef make(K kind)
    {
        auto v = std::make_shared<PickleValue>();
        v->kind = kind;
        m_all.push_back(v);
        return v;
    }
    PickleRef makeInt(std::int64_t i, K kind = K::Int)
    {
        auto v = make(kind);
        v->i = i;
        return v;
    }

    // Walks the result graph without recursion: refuses a cycle or nesting deeper than
    // kMaxPickleNesting, and records the values it reaches in m_kept.
    Status keepResult(const PickleRef& root)
    {
        // Per value: -1 while on the current path, else the height of the value's subtree.
        std::unordered_map<const PickleValue*, std::int64_t> height;
        struct Frame {
            const PickleValue* v;
            std::size_t next;
            std::int64_t height;
        };
        auto child = [](const PickleValue* v, std::size_t i) -> const PickleValue* {
            if (i < v->items.size()) return v->items[i].get();
            i -= v->items.size();
            if (i < 2 * v->dict.size()) return (i % 2 ? v->dict[i / 2].second : v->dict[i / 2].first).get();
            i -= 2 * v->dict.size();
            return i == 0 ? v->storage.get() : nullptr;
        };
        auto childCount = [](const PickleValue* v) {
            return v->items.size() + 2 * v->dict.size() + (v->storage ? 1 : 0);
        };
        auto tooDeep = [&] {
            return fail("pickle nests containers more than " + std::to_string(kMaxPickleNesting) + " levels deep");
        };
        std::vector<Frame> path{{root.get(), 0, 0}};
        height[root.get()] = -1;
        while (!path.empty()) {
            Frame& f = path.back();
            if (f.next == childCount(f.v)) {
                const std::int64_t h = f.height;
                height[f.v] = h;
                path.pop_back();
                if (!path.empty()) path.back().height = std::max(path.back().height, h + 1);
                continue;
            }
            const PickleValue* c = child(f.v, f.next++);
            if (!c) continue;
            const auto it = height.find(c);
            if (it != height.end()) {
                if (it->second < 0) return fail("pickle holds a reference cycle");
                if (path.size() + std::size_t(it->second) > kMaxPickleNesting) return tooDeep();
                f.height = std::max(f.height, it->second + 1);
                continue;
            }
            if (path.size() >= kMaxPickleNesting) return tooDeep();
            height[c] = -1;
            path.push_back({c, 0, 0});
        }
        for (const auto& [v, h] : height)
            m_kept.insert(v);
        return {};
    }

    Error fail(const std::string& msg, std::uint64_t at) const
    {
        return makeError(ErrorCode::Format, msg, m_context + " at pickle offset " + std::to_string(at));
    }
    Error fail(const std::string& msg) const { return fail(msg, m_at); }

    Result<PickleRef> pop()
    {
        if (m_stack.empty() || (!m_marks.empty() && m_marks.back() == m_stack.size())) return fail("stack underflow");
        PickleRef v = std::move(m_stack.back());
        m_stack.pop_back();
        return v;
    }
    Result<std::vector<PickleRef>> popMark()
    {
        if (m_marks.empty()) return fail("no MARK on the stack");
        const std::size_t m = m_marks.back();
        m_marks.pop_back();
        std::vector<PickleRef> items(m_stack.begin() + std::ptrdiff_t(m), m_stack.end());
        m_stack.resize(m);
        return items;
    }
    Result<PickleRef> top()
    {
        if (m_stack.empty()) return fail("stack underflow");
        return m_stack.back();
    }
    Result<std::string> bytes(std::uint64_t n)
    {
        if (n > m_cur.remaining()) return fail("string of " + std::to_string(n) + " bytes runs past the end");
        return m_cur.readString(n);
    }
    Result<std::string> line()
    {
        std::string s;
        while (true) {
            QB_TRY(c, m_cur.read<char>());
            if (*c == '\n') return s;
            s += *c;
            if (s.size() > 256) return fail("GLOBAL name too long");
        }
    }
    Status push(PickleRef v)
    {
        m_stack.push_back(std::move(v));
        return {};
    }
    Result<PickleRef> global(const std::string& module, const std::string& name)
    {
        const std::string full = module + "." + name;
        for (const auto& s : kStorages)
            if (full == s.name) {
                auto g = make(K::Global);
                g->s = full;
                g->dtype = s.dtype;
                return g;
            }
        for (const char* a : kAllowed)
            if (full == a) {
                auto g = make(K::Global);
                g->s = full;
                return g;
            }
        return makeError(ErrorCode::Unsupported,
                         "disallowed pickle global \"" + full +
                             "\" (only torch tensor-rebuild functions and storages are allowed)",
                         m_context + " at pickle offset " + std::to_string(m_at));
    }
    static bool isInt(const PickleRef& v) { return v && (v->kind == K::Int || v->kind == K::Bool); }
    Result<std::vector<std::int64_t>> intTuple(const PickleRef& v, const char* what)
    {
        if (!v || (v->kind != K::Tuple && v->kind != K::List)) return fail(std::string(what) + " is not a tuple");
        std::vector<std::int64_t> out;
        for (const auto& x : v->items) {
            if (!isInt(x)) return fail(std::string(what) + " holds a non-integer");
            out.push_back(x->i);
        }
        return out;
    }
    Result<PickleRef> persistentLoad(const PickleRef& pid)
    {
        if (!pid || pid->kind != K::Tuple || pid->items.size() < 5 || pid->items[0]->kind != K::String ||
            pid->items[0]->s != "storage")
            return fail("unsupported persistent id (expected (\"storage\", class, key, location, numel))");
        const PickleRef& cls = pid->items[1];
        if (cls->kind != K::Global || cls->s.find("Storage") == std::string::npos)
            return fail("persistent id names no storage class");
        const PickleRef& key = pid->items[2];
        if (key->kind != K::String || !isInt(pid->items[4])) return fail("malformed storage persistent id");
        auto s = make(K::Storage);
        s->storageKey = key->s;
        s->dtype = cls->dtype;
        s->storageNumel = pid->items[4]->i;
        return s;
    }
    Result<PickleRef> rebuildTensor(const std::vector<PickleRef>& a)
    {
        if (a.size() < 4) return fail("_rebuild_tensor needs (storage, offset, size, stride)");
        if (!a[0] || a[0]->kind != K::Storage) return fail("_rebuild_tensor argument 0 is not a storage");
        if (!isInt(a[1])) return fail("_rebuild_tensor storage offset is not an integer");
        auto t = make(K::Tensor);
        t->storage = a[0];
        t->storageOffset = a[1]->i;
        QB_TRY(size, intTuple(a[2], "tensor size"));
        QB_TRY(stride, intTuple(a[3], "tensor stride"));
        if (size->size() != stride->size()) return fail("tensor size and stride differ in length");
        t->size = std::move(*size);
        t->stride = std::move(*stride);
        return t;
    }
    // Calls an allow-listed callable. _rebuild_from_type_v2(func, type, args, state) calls
    // func(*args), which may be _rebuild_from_type_v2 again: a loop, not recursion.
    Result<PickleRef> call(PickleRef fn, PickleRef args)
    {
        while (true) {
            if (!fn || fn->kind != K::Global) return fail("REDUCE on a non-callable");
            if (!args || args->kind != K::Tuple) return fail("REDUCE arguments are not a tuple");
            const auto& a = args->items;
            const std::string& f = fn->s;
            if (f == "collections.OrderedDict") return make(K::Dict);
            if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") return rebuildTensor(a);
            if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state" ||
                f == "torch.nn.parameter.Parameter") {
                if (a.empty()) return fail(f + " without data");
                return a[0];
            }
            if (f != "torch._tensor._rebuild_from_type_v2") return fail("global \"" + f + "\" cannot be called");
            if (a.size() < 3) return fail("_rebuild_from_type_v2 needs (func, type, args, state)");
            PickleRef nextFn = a[0], nextArgs = a[2];
            fn = std::move(nextFn);
            args = std::move(nextArgs);
        }
    }
    Status setItems(const PickleRef& d, const std::vector<PickleRef>& kv)
    {
        if (!d || d->kind != K::Dict) return fail("SETITEM(S) on a non-dict");
        if (kv.size() % 2) return fail("SETITEMS with an odd number of items");
        for (std::size_t i = 0; i < kv.size(); i += 2)
            d->dict.emplace_back(kv[i], kv[i + 1]);
        return {};
    }
    Result<std::int64_t> longBytes(std::uint64_t n)
    {
        if (n > 8) return fail("LONG wider than 64 bits");
        QB_TRY(b, bytes(n));
        std::uint64_t v = 0;
        for (std::uint64_t k = 0; k < n; ++k)
            v |= std::uint64_t(std::uint8_t((*b)[k])) << (8 * k);
        if (n > 0 && n < 8 && (std::uint8_t((*b)[n - 1]) & 0x80)) v |= ~std::uint64_t(0) << (8 * n);
        return std::int64_t(v);
    }

    Status step(std::uint8_t op)
    {
        switch (op) {
        case 0x80: { // PROTO
            QB_TRY(p, m_cur.read<std::uint8_t>());
            if (*p > 5) return fail("pickle protocol " + std::to_string(*p) + " is not supported");
            return {};
        }
        case 0x95: { // FRAME
            QB_TRY(n, m_cur.read<std::uint64_t>());
            return {};
        }
        case 'c': { // GLOBAL
            QB_TRY(mod, line());
            QB_TRY(name, line());
            QB_TRY(g, global(*mod, *name));
            return push(*g);
        }
        case 0x93: { // STACK_GLOBAL
            QB_TRY(name, pop());
            QB_TRY(mod, pop());
            if ((*name)->kind != K::String || (*mod)->kind != K::String) return fail("STACK_GLOBAL needs strings");
            QB_TRY(g, global((*mod)->s, (*name)->s));
            return push(*g);
        }
        case 'q':
        case 'r': { // BINPUT, LONG_BINPUT
            std::uint32_t idx = 0;
            if (op == 'q') {
                QB_TRY(i, m_cur.read<std::uint8_t>());
                idx = *i;
            } else {
                QB_TRY(i, m_cur.read<std::uint32_t>());
                idx = *i;
            }
            QB_TRY(t, top());
            m_memo[idx] = *t;
            return {};
        }
        case 0x94: { // MEMOIZE
            QB_TRY(t, top());
            m_memo[std::uint32_t(m_memo.size())] = *t;
            return {};
        }
        case 'h':
        case 'j': { // BINGET, LONG_BINGET
            std::uint32_t idx = 0;
            if (op == 'h') {
                QB_TRY(i, m_cur.read<std::uint8_t>());
                idx = *i;
            } else {
                QB_TRY(i, m_cur.read<std::uint32_t>());
                idx = *i;
            }
            const auto it = m_memo.find(idx);
            if (it == m_memo.end()) return fail("memo key " + std::to_string(idx) + " not found");
            return push(it->second);
        }
        case '(': m_marks.push_back(m_stack.size()); return {};
        case '0': return pop().ok() ? Status() : Status(fail("POP on an empty stack"));
        case '1': {
            QB_TRY(items, popMark());
            return {};
        }
        case ')': return push(make(K::Tuple));
        case 't': {
            QB_TRY(items, popMark());
            auto t = make(K::Tuple);
            t->items = std::move(*items);
            return push(t);
        }
        case 0x85:
        case 0x86:
        case 0x87: { // TUPLE1..3
            const int n = op - 0x84;
            auto t = make(K::Tuple);
            t->items.resize(std::size_t(n));
            for (int k = n - 1; k >= 0; --k) {
                QB_TRY(v, pop());
                t->items[std::size_t(k)] = *v;
            }
            return push(t);
        }
        case ']': return push(make(K::List));
        case 'a': {
            QB_TRY(v, pop());
            QB_TRY(l, top());
            if ((*l)->kind != K::List) return fail("APPEND on a non-list");
            (*l)->items.push_back(*v);
            return {};
        }
        case 'e': {
            QB_TRY(items, popMark());
            QB_TRY(l, top());
            if ((*l)->kind != K::List) return fail("APPENDS on a non-list");
            for (auto& v : *items)
                (*l)->items.push_back(v);
            return {};
        }
        case '}': return push(make(K::Dict));
        case 's': {
            QB_TRY(v, pop());
            QB_TRY(k, pop());
            QB_TRY(d, top());
            return setItems(*d, {*k, *v});
        }
        case 'u': {
            QB_TRY(items, popMark());
            QB_TRY(d, top());
            return setItems(*d, *items);
        }
        case 0x8F: return push(make(K::Set));
        case 0x90: { // ADDITEMS
            QB_TRY(items, popMark());
            QB_TRY(s, top());
            if ((*s)->kind != K::Set) return fail("ADDITEMS on a non-set");
            for (auto& v : *items)
                (*s)->items.push_back(v);
            return {};
        }
        case 'J': {
            QB_TRY(v, m_cur.read<std::int32_t>());
            return push(makeInt(*v));
        }
        case 'K': {
            QB_TRY(v, m_cur.read<std::uint8_t>());
            return push(makeInt(*v));
        }
        case 'M': {
            QB_TRY(v, m_cur.read<std::uint16_t>());
            return push(makeInt(*v));
        }
        case 0x8A: { // LONG1
            QB_TRY(n, m_cur.read<std::uint8_t>());
            QB_TRY(v, longBytes(*n));
            return push(makeInt(*v));
        }
        case 0x8B: { // LONG4
            QB_TRY(n, m_cur.read<std::uint32_t>());
            QB_TRY(v, longBytes(*n));
            return push(makeInt(*v));
        }
        case 'G': {
            QB_TRY(b, bytes(8));
            std::uint64_t u = 0;
            for (int k = 0; k < 8; ++k)
                u = (u << 8) | std::uint8_t((*b)[std::size_t(k)]);
            auto v = make(K::Float);
            std::memcpy(&v->f, &u, 8);
            return push(v);
        }
        case 'X':
        case 0x8C:
        case 0x8D:
        case 'U':
        case 'B':
        case 'C':
        case 0x8E: {
            std::uint64_t n = 0;
            if (op == 'X' || op == 'B') {
                QB_TRY(l, m_cur.read<std::uint32_t>());
                n = *l;
            } else if (op == 0x8C || op == 'U' || op == 'C') {
                QB_TRY(l, m_cur.read<std::uint8_t>());
                n = *l;
            } else {
                QB_TRY(l, m_cur.read<std::uint64_t>());
                n = *l;
            }
            QB_TRY(b, bytes(n));
            auto v = make(op == 'B' || op == 'C' || op == 0x8E ? K::Bytes : K::String);
            v->s = std::move(*b);
            return push(v);
        }
        case 'N': return push(make(K::None));
        case 0x88: return push(makeInt(1, K::Bool));
        case 0x89: return push(makeInt(0, K::Bool));
        case 'Q': { // BINPERSID
            QB_TRY(pid, pop());
            QB_TRY(s, persistentLoad(*pid));
            return push(*s);
        }
        case 'R': {
            QB_TRY(args, pop());
            QB_TRY(fn, pop());
            QB_TRY(r, call(*fn, *args));
            return push(*r);
        }
        case 0x81: { // NEWOBJ: cls.__new__(cls, *args)
            QB_TRY(args, pop());
            QB_TRY(cls, pop());
            QB_TRY(r, call(*cls, *args));
            return push(*r);
        }
        case 'b': { // BUILD: state is dropped (OrderedDict _metadata, tensor hooks)
            QB_TRY(state, pop());
            QB_TRY(obj, top());
            return {};
        }
        default: break;
        }
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        return fail(std::string("unsupported pickle opcode ") + hex);
    }

    ByteCursor m_cur;
    std::string m_context;
    std::uint64_t m_at = 0;
    std::vector<PickleRef> m_stack;
    std::vector<std::size_t> m_marks;
    std::unordered_map<std::uint32_t, PickleRef> m_memo;
    std::vector<PickleRef> m_all;                  // every value created (see the top)
    std::unordered_set<const PickleValue*> m_kept; // reachable from the returned result
};

} // namespace

Result<PickleRef> unpickleTorch(const ByteRange& data, const std::string& context)
{
    return Machine(data, context).run();
}

} // namespace qb::io::detail
