/* The cleanroom command (src/cli/main.c has the command line). */
#include "cli/cli.h"

int main(int argc, char **argv) { return cr_cli_main(argc, argv); }
