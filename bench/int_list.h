// "1,8,32" → {1, 8, 32}: the comma-separated sizes the benchmarks take on their command lines.
#pragma once

#include <sstream>
#include <string>
#include <vector>

namespace arbor::bench {

inline std::vector<int> parse_int_list(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) v.push_back(std::stoi(item));
  return v;
}

}  // namespace arbor::bench
