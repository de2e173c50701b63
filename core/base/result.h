#pragma once
// Result<T> and Error: how every expected failure travels in Quantbench.
//
// A function that can fail for reasons outside the programmer's control (a bad file, an
// unsupported dtype, a shape mismatch, too little memory) returns Result<T>. The Error carries a
// machine-readable code, a human message, and a context string naming the file, tensor and offset.
// Exceptions never cross a module or thread boundary. Result is a plain value type: no threads,
// no allocation beyond the strings.

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace qb {

enum class ErrorCode {
    Io,          // the operating system refused (open, read, write, rename, mmap)
    Format,      // the bytes do not follow the file format
    Unsupported, // well-formed, but a feature we do not handle (dtype, architecture, version)
    Shape,       // a tensor's shape or size does not fit
    OutOfRange,  // an access past the end of a buffer or file
    InvalidArgument,
    OutOfMemory,
    NumericalError, // NaN/Inf or a failed factorisation
    Cancelled,
    Internal,
};

const char* errorCodeName(ErrorCode code);

struct Error {
    ErrorCode code = ErrorCode::Internal;
    std::string message;
    std::string context; // file, tensor, offset: where it happened

    // "message (context)", or just the message when there is no context.
    std::string toString() const;
    // A copy with an outer context prepended, e.g. the file name around a tensor error.
    Error withContext(const std::string& outer) const;
};

inline Error makeError(ErrorCode code, std::string message, std::string context = {})
{
    return Error{code, std::move(message), std::move(context)};
}

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : m_v(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : m_v(std::in_place_index<1>, std::move(error)) {}

    bool ok() const { return m_v.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() &
    {
        assert(ok());
        return std::get<0>(m_v);
    }
    const T& value() const&
    {
        assert(ok());
        return std::get<0>(m_v);
    }
    T&& value() &&
    {
        assert(ok());
        return std::get<0>(std::move(m_v));
    }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const
    {
        assert(!ok());
        return std::get<1>(m_v);
    }

private:
    std::variant<T, Error> m_v;
};

// Result<void>: success carries nothing.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : m_error(std::move(error)), m_ok(false) {}
    bool ok() const { return m_ok; }
    explicit operator bool() const { return m_ok; }
    const Error& error() const
    {
        assert(!m_ok);
        return m_error;
    }

private:
    Error m_error;
    bool m_ok = true;
};

using Status = Result<void>;

} // namespace qb

// Propagate an error from an expression returning Result<...>: QB_TRY(r, expr); then use *r.
#define QB_TRY(var, expr)                                                                                              \
    auto var = (expr);                                                                                                 \
    if (!var.ok()) return var.error()
#define QB_TRY_STATUS(expr)                                                                                            \
    do {                                                                                                               \
        auto qbStatus_ = (expr);                                                                                       \
        if (!qbStatus_.ok()) return qbStatus_.error();                                                                 \
    } while (0)
