// SPDX-License-Identifier: MIT
// Minimal token contracts for Clawx's badge tests: each implements the reads a badge rule
// makes (ERC-20 and ERC-721 balanceOf, ERC-721 ownerOf, ERC-1155 balanceOf) and enough writes
// (mint by the deployer, transfer by the holder) to move tokens in a test. Not for production.
// Compiled with solc-js 0.8.37: `npm run build` (writes build/*.bin and build/*.abi).
pragma solidity ^0.8.20;

contract TestERC20 {
    string public name = "Clawx Test Token";
    string public symbol = "CTT";
    uint8 public decimals = 18;
    uint256 public totalSupply;
    address public immutable minter;
    mapping(address => uint256) public balanceOf;

    event Transfer(address indexed from, address indexed to, uint256 value);

    constructor() {
        minter = msg.sender;
    }

    function mint(address to, uint256 amount) external {
        require(msg.sender == minter, "only the minter");
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        require(balanceOf[msg.sender] >= amount, "balance too low");
        balanceOf[msg.sender] -= amount;
        balanceOf[to] += amount;
        emit Transfer(msg.sender, to, amount);
        return true;
    }
}

contract TestERC721 {
    string public name = "Clawx Test NFT";
    string public symbol = "CTN";
    address public immutable minter;
    mapping(uint256 => address) private owners;
    mapping(address => uint256) private balances;

    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);

    error ERC721NonexistentToken(uint256 tokenId);

    constructor() {
        minter = msg.sender;
    }

    function balanceOf(address owner) external view returns (uint256) {
        require(owner != address(0), "zero address");
        return balances[owner];
    }

    function ownerOf(uint256 tokenId) public view returns (address) {
        address owner = owners[tokenId];
        if (owner == address(0)) revert ERC721NonexistentToken(tokenId);
        return owner;
    }

    function mint(address to, uint256 tokenId) external {
        require(msg.sender == minter, "only the minter");
        require(owners[tokenId] == address(0), "minted");
        owners[tokenId] = to;
        balances[to] += 1;
        emit Transfer(address(0), to, tokenId);
    }

    function transferFrom(address from, address to, uint256 tokenId) external {
        require(ownerOf(tokenId) == from && msg.sender == from, "not the owner");
        owners[tokenId] = to;
        balances[from] -= 1;
        balances[to] += 1;
        emit Transfer(from, to, tokenId);
    }
}

contract TestERC1155 {
    address public immutable minter;
    mapping(uint256 => mapping(address => uint256)) private balances;

    event TransferSingle(address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value);

    constructor() {
        minter = msg.sender;
    }

    function balanceOf(address account, uint256 id) external view returns (uint256) {
        return balances[id][account];
    }

    function mint(address to, uint256 id, uint256 amount) external {
        require(msg.sender == minter, "only the minter");
        balances[id][to] += amount;
        emit TransferSingle(msg.sender, address(0), to, id, amount);
    }

    function safeTransferFrom(address from, address to, uint256 id, uint256 amount, bytes calldata) external {
        require(msg.sender == from, "not the holder");
        require(balances[id][from] >= amount, "balance too low");
        balances[id][from] -= amount;
        balances[id][to] += amount;
        emit TransferSingle(msg.sender, from, to, id, amount);
    }
}
