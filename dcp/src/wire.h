// Encodings of what travels between ranks: plans, write results, failures.
// Used only by DistWrapper; the metadata has its own (metadata.cpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "dcp/error.h"
#include "dcp/metadata.h"
#include "dcp/planner.h"
#include "dcp/storage.h"

namespace dcp {
namespace wire {

std::string encode(const SavePlan& plan);
std::string encode(const LoadPlan& plan);
std::string encode(const std::vector<WriteResult>& results);
std::string encode(const Metadata& metadata);
std::string encode(int value);
std::string encode(const std::vector<RankFailure>& failures);

void decode(std::string_view bytes, SavePlan& out);
void decode(std::string_view bytes, LoadPlan& out);
void decode(std::string_view bytes, std::vector<WriteResult>& out);
void decode(std::string_view bytes, Metadata& out);
void decode(std::string_view bytes, int& out);
void decode(std::string_view bytes, std::vector<RankFailure>& out);

}  // namespace wire
}  // namespace dcp
