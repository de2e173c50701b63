// The donor of the tests precompiled header (test_pch.h; tests/CMakeLists.txt).
