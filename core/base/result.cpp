#include "base/result.h"

namespace qb {

const char* errorCodeName(ErrorCode code)
{
    switch (code) {
    case ErrorCode::Io: return "io";
    case ErrorCode::Format: return "format";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::Shape: return "shape";
    case ErrorCode::OutOfRange: return "out-of-range";
    case ErrorCode::InvalidArgument: return "invalid-argument";
    case ErrorCode::OutOfMemory: return "out-of-memory";
    case ErrorCode::NumericalError: return "numerical";
    case ErrorCode::Cancelled: return "cancelled";
    case ErrorCode::Internal: return "internal";
    }
    return "unknown";
}

std::string Error::toString() const
{
    if (context.empty()) return message;
    return message + " (" + context + ")";
}

Error Error::withContext(const std::string& outer) const
{
    Error e = *this;
    e.context = context.empty() ? outer : outer + ": " + context;
    return e;
}

} // namespace qb
