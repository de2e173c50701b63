// Tokenizer model: byte-pair encoding of one pre-token, as the Rust crate's BPE (merge_word and
// Word::merge_all, without dropout). The word starts as one symbol per character (with
// continuing_subword_prefix / end_of_word_suffix, <0xHH> byte fallback, unknown characters as
// unk_token, fused when fuse_unk), then the adjacent pair of lowest merge rank is merged,
// leftmost first on ties, until no pair has a merge.
// Threading: const over immutable loaded data; no state between calls.

#include "io/tokenizer_detail.h"

#include <queue>

namespace qb::io::detail {

void TokenizerImpl::bpeWord(std::string_view word, std::vector<std::int32_t>& out) const
{
    if (ignoreMerges) {
        auto it = vocab.find(word);
        if (it != vocab.end()) {
            out.push_back(it->second);
            return;
        }
    }
    struct Sym {
        std::int32_t id;
        int prev, next;
        bool alive;
    };
    std::vector<Sym> syms;
    syms.reserve(word.size());
    auto add = [&](std::int32_t id) {
        const int n = int(syms.size());
        if (n > 0) syms[n - 1].next = n;
        syms.push_back({id, n - 1, -1, true});
    };
    std::int32_t pendingUnk = -1;
    std::string s;
    std::size_t pos = 0;
    while (pos < word.size()) {
        const CodePoint c = decodeUtf8(word, pos);
        const bool first = pos == 0;
        const bool last = pos + std::size_t(c.len) >= word.size();
        s.clear();
        if (!first) s += continuingPrefix;
        s.append(word.substr(pos, std::size_t(c.len)));
        if (last) s += endOfWordSuffix;
        pos += std::size_t(c.len);
        if (auto it = vocab.find(s); it != vocab.end()) {
            if (pendingUnk >= 0) {
                add(pendingUnk);
                pendingUnk = -1;
            }
            add(it->second);
            continue;
        }
        if (byteFallback) {
            bool all = true;
            for (unsigned char b : s)
                all = all && byteTokenIds[b] >= 0;
            if (all) {
                for (unsigned char b : s)
                    add(byteTokenIds[b]);
                continue;
            }
        }
        if (unkId) {
            if (pendingUnk >= 0 && !fuseUnk) add(pendingUnk);
            pendingUnk = *unkId;
        }
    }
    if (pendingUnk >= 0) add(pendingUnk);

    struct Cand {
        std::int32_t rank;
        int pos;
        std::int32_t newId;
        bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    auto pairInfo = [&](std::int32_t a, std::int32_t b) -> const std::pair<std::int32_t, std::int32_t>* {
        auto it = merges.find((std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b));
        return it == merges.end() ? nullptr : &it->second;
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> queue;
    for (int i = 0; i + 1 < int(syms.size()); ++i)
        if (auto m = pairInfo(syms[i].id, syms[i + 1].id)) queue.push({m->first, i, m->second});
    while (!queue.empty()) {
        const Cand top = queue.top();
        queue.pop();
        Sym& left = syms[top.pos];
        if (!left.alive || left.next < 0) continue;
        Sym& right = syms[left.next];
        const auto m = pairInfo(left.id, right.id);
        if (!m || m->second != top.newId) continue; // stale entry
        left.id = top.newId;
        right.alive = false;
        left.next = right.next;
        if (left.next >= 0) syms[left.next].prev = top.pos;
        if (left.prev >= 0)
            if (auto pm = pairInfo(syms[left.prev].id, left.id)) queue.push({pm->first, left.prev, pm->second});
        if (left.next >= 0)
            if (auto nm = pairInfo(left.id, syms[left.next].id)) queue.push({nm->first, top.pos, nm->second});
    }
    for (const Sym& sy : syms)
        if (sy.alive) out.push_back(sy.id);
}

} // namespace qb::io::detail
