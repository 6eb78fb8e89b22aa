// The demo and the tests rewrite this line to tell releases apart.
export const APP_VERSION = "v1";
