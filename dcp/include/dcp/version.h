#pragma once
#define DCP_VERSION_STRING "0.1.0"
namespace dcp {
constexpr const char* kVersion = DCP_VERSION_STRING;
}
