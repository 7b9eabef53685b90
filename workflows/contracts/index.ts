export * from './errors.js';
export * from './hosts.js';
export * from './operations.js';
export * from './search-attributes.js';
export * from './messages.js';
export * from './users.js';
export * from './user-environment.js';
export * from './elastic.js';
