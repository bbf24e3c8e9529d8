// arbor: one executable, subcommands.
#include <cstdio>

int main() {
  std::puts("arbor " ARBOR_VERSION);
  return 0;
}
